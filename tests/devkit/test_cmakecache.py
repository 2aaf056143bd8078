"""CMAKE_ARGS applies to the builds that pass it (devkit.build.cmakecache)."""

from devkit.build.cmakecache import RECORD, follow_cmake_args


def test_a_change_of_cmake_args_drops_the_cache(tmp_path):
    said: list[str] = []
    cache = tmp_path / "CMakeCache.txt"
    # First build: nothing to drop; recorded.
    assert not follow_cmake_args(tmp_path, "-DCMAKE_CXX_FLAGS=-fbogus-flag", said.append)
    assert (tmp_path / RECORD).read_text() == "-DCMAKE_CXX_FLAGS=-fbogus-flag"
    cache.write_text("CMAKE_CXX_FLAGS:STRING=-fbogus-flag\n")
    # Same arguments: the cache stays.
    assert not follow_cmake_args(tmp_path, "-DCMAKE_CXX_FLAGS=-fbogus-flag", said.append)
    assert cache.is_file() and said == []
    # A plain build after it: configured afresh, without the flag.
    assert follow_cmake_args(tmp_path, "", said.append)
    assert not cache.exists()
    assert said == [
        "CMAKE_ARGS changed (-DCMAKE_CXX_FLAGS=-fbogus-flag -> unset): configuring from a "
        "fresh CMake cache, so they apply to this build only"
    ]
    assert (tmp_path / RECORD).read_text() == ""


def test_a_build_dir_from_before_the_record_counts_as_plain(tmp_path):
    (tmp_path / "CMakeCache.txt").write_text("")
    assert not follow_cmake_args(tmp_path, "", print)
    assert follow_cmake_args(tmp_path, "-DX=1", print)
