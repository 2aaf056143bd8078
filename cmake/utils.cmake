# One function per build concern. CMakeLists.txt reads as a list of calls.

# Reads the build plan (tools/devkit/toolchains/plan.py) that the build backend applies,
# <build dir>/plan.json, into OUT_VAR (its JSON text): the build info comes from
# it. A plan rewritten since (a session's next build) configures again, also
# under `cmake --build --preset cpu`.
#   vllm_read_plan(VLLM_PLAN "${VLLM_PLAN_FILE}")
function(vllm_read_plan out_var plan_file)
  if(NOT plan_file OR NOT EXISTS "${plan_file}")
    message(FATAL_ERROR
      "VLLM_PLAN_FILE='${plan_file}' is not a file: configure through the build backend "
      "(nox -s build-cpu, or uv pip install --no-build-isolation -e .), which writes the "
      "plan, or a preset it wrote (cmake --preset cpu)")
  endif()
  file(READ "${plan_file}" _plan)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${plan_file}")
  set(${out_var} "${_plan}" PARENT_SCOPE)
endfunction()

# Routes every compiler through ccache/sccache when a launcher is given; nvcc
# through `cuda_launcher` instead when that is set (a list). With sccache the
# build plan sets it so that paths reach sccache relative to the checkout:
#   vllm_set_compiler_launcher("/venv/bin/sccache"
#     "/repo/tools/devkit/build/nvcc_relative.py;/venv/bin/sccache")
# makes ninja run `nvcc_relative.py /venv/bin/sccache /usr/local/cuda/bin/nvcc -c ...`.
function(vllm_set_compiler_launcher launcher cuda_launcher)
  if(launcher)
    foreach(lang C CXX CUDA HIP)
      set(CMAKE_${lang}_COMPILER_LAUNCHER "${launcher}" PARENT_SCOPE)
    endforeach()
    message(STATUS "Compiler cache: ${launcher}")
  else()
    message(STATUS "Compiler cache: none")
  endif()
  if(cuda_launcher)
    set(CMAKE_CUDA_COMPILER_LAUNCHER "${cuda_launcher}" PARENT_SCOPE)
    message(STATUS "nvcc launcher: ${cuda_launcher}")
  endif()
endfunction()

# The interpreter, and the directory of the torch it imports, into OUT_DIR.
# Example: vllm_python_and_torch_dir(_dir) sets _dir to
# .venv-cpu/lib/python3.11/site-packages/torch; without an importable torch it
# stops with the one line that says how to install it.
macro(vllm_python_and_torch_dir OUT_DIR)
  find_package(Python REQUIRED COMPONENTS Interpreter Development.SABIModule)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import importlib.util as u, os; print(os.path.dirname(u.find_spec('torch').origin), end='')"
    OUTPUT_VARIABLE ${OUT_DIR}
    RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR
      "torch is not importable by ${Python_EXECUTABLE}; install the target's "
      "torch first (nox -s build-cpu does) and build with --no-build-isolation")
  endif()
endmacro()

# Finds the interpreter that runs the build (with its stable-ABI module
# support) and the torch installed in it. Torch is never searched for
# elsewhere: building against another torch than the one you import is how
# `undefined symbol` errors are born.
macro(vllm_find_python_and_torch)
  vllm_python_and_torch_dir(_torch_dir)
  set(_torch_prefix "${_torch_dir}/share/cmake")
  list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
  find_package(Torch REQUIRED)
  set(VLLM_TORCH_LINK torch)
  # Torch >= 2.14 headers use C++20; older ones build with it as well.
  set(CMAKE_CXX_STANDARD 20)
  set(CMAKE_CXX_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_HIP_STANDARD 20)
  set(CMAKE_HIP_STANDARD_REQUIRED ON)
  message(STATUS "Torch ${Torch_VERSION} from ${_torch_prefix}")
endmacro()

# The interpreter and its torch, for a target built only on torch's stable ABI
# (the CPU kernels): torch's headers and the two libraries that export the C
# shim (libtorch_cpu, libc10), without torch's CMake config. That config needs
# CUDA when torch is a CUDA build (2.14.1 from PyPI is), and takes most of a
# configure; the stable ABI needs none of what it sets up.
macro(vllm_find_python_and_stable_torch)
  vllm_python_and_torch_dir(TORCH_INSTALL_PREFIX)
  string(JSON Torch_VERSION GET "${VLLM_PLAN}" torch version)  # as the plan read it
  add_library(vllm_torch_stable INTERFACE IMPORTED)
  target_include_directories(vllm_torch_stable INTERFACE "${TORCH_INSTALL_PREFIX}/include")
  target_link_libraries(vllm_torch_stable INTERFACE
    "${TORCH_INSTALL_PREFIX}/lib/libtorch_cpu.so" "${TORCH_INSTALL_PREFIX}/lib/libc10.so")
  set(VLLM_TORCH_LINK vllm_torch_stable)
  set(CMAKE_CXX_STANDARD 20)
  set(CMAKE_CXX_STANDARD_REQUIRED ON)
  message(STATUS "Torch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX} (stable ABI: headers and C shim only)")
endmacro()

# The CPU kernels' ISAs are one table, cmake/cpu_isa.json (devkit.toolchains.cpuisa reads it
# too). `_list` is the CMake list of the JSON array at the path given after it.
function(_vllm_cpu_isa_list out_var)
  file(READ "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/cpu_isa.json" _json)
  string(JSON _count LENGTH "${_json}" ${ARGN})
  set(_items "")
  if(_count GREATER 0)
    math(EXPR _last "${_count} - 1")
    foreach(_i RANGE ${_last})
      string(JSON _item GET "${_json}" ${ARGN} ${_i})
      list(APPEND _items "${_item}")
    endforeach()
  endif()
  set(${out_var} "${_items}" PARENT_SCOPE)
endfunction()

# The ISA `auto` picks from a /proc/cpuinfo text: the first of the table's
# detect_order whose cpu_flags the CPU has, else "default".
function(vllm_cpu_isa_detect out_var cpuinfo)
  string(REGEX MATCH "\nflags[ \t]*:[^\n]*" _line "\n${cpuinfo}")
  string(REGEX REPLACE "^\nflags[ \t]*:[ \t]*" "" _line "${_line}")
  string(REGEX REPLACE "[ \t]+" ";" _have "${_line}")
  _vllm_cpu_isa_list(_order detect_order)
  foreach(_isa IN LISTS _order)
    _vllm_cpu_isa_list(_needed isa ${_isa} cpu_flags)
    set(_all TRUE)
    foreach(_flag IN LISTS _needed)
      if(NOT _flag IN_LIST _have)
        set(_all FALSE)
      endif()
    endforeach()
    if(_all)
      set(${out_var} "${_isa}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out_var} "default" PARENT_SCOPE)
endfunction()

# Picks the x86 vector ISA of the CPU kernels. "auto" reads the build
# machine's /proc/cpuinfo; set VLLM_CPU_ISA to build for another machine.
# at::vec selects its Vectorized<T> implementation from CPU_CAPABILITY_*.
function(vllm_cpu_isa_flags out_var isa)
  if(isa STREQUAL "auto")
    set(isa "default")
    if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64" AND EXISTS /proc/cpuinfo)
      file(READ /proc/cpuinfo _cpuinfo)
      vllm_cpu_isa_detect(isa "${_cpuinfo}")
    endif()
  endif()
  _vllm_cpu_isa_list(_known detect_order)
  list(APPEND _known default)
  if(NOT isa IN_LIST _known)
    list(JOIN _known ", " _names)
    message(FATAL_ERROR "VLLM_CPU_ISA=${isa} is not one of auto, ${_names}")
  endif()
  _vllm_cpu_isa_list(flags isa ${isa} compile_flags)
  message(STATUS "CPU kernels ISA: ${isa}")
  set(VLLM_CPU_ISA_RESOLVED "${isa}" CACHE INTERNAL "")
  set(${out_var} ${flags} PARENT_SCOPE)
endfunction()

# nvcc flags for exactly one GPU arch. Torch's CMake config appends -gencode
# flags for its own arch list (or compute_50 when it has none, which nvcc 13
# rejects) to CMAKE_CUDA_FLAGS; they are removed so only `gencode` is built.
function(vllm_cuda_flags out_var gencode threads)
  if(NOT gencode)
    message(FATAL_ERROR "VLLM_CUDA_GENCODE is empty; build with nox -s build-cuda -- --arch 9.0")
  endif()
  string(REGEX REPLACE "-gencode[= ]+arch=[^ ]+" "" _flags "${CMAKE_CUDA_FLAGS}")
  set(CMAKE_CUDA_FLAGS "${_flags}" PARENT_SCOPE)
  message(STATUS "CUDA arch: ${gencode}; nvcc --threads ${threads}")
  set(${out_var} ${gencode} --threads=${threads} --expt-relaxed-constexpr PARENT_SCOPE)
endfunction()

# Flags of a ROCm build for exactly one GPU arch (CMAKE_HIP_ARCHITECTURES,
# which CMake turns into --offload-arch). `hip_out`: the HIP compiler's;
# `cxx_out`: the host C++ files', which see the same torch headers. The
# defines are torch.utils.cpp_extension's (COMMON_HIP_FLAGS and
# COMMON_HIPCC_FLAGS) without its __HIP_NO_HALF_* ones: the CUDA build doesn't
# set their __CUDA_NO_HALF_* twins either. Arch flags that torch's config may
# leave in CMAKE_HIP_FLAGS are removed, as for CUDA.
function(vllm_hip_flags hip_out cxx_out arch)
  list(LENGTH arch _count)
  if(NOT _count EQUAL 1)
    message(FATAL_ERROR "CMAKE_HIP_ARCHITECTURES='${arch}' must be one arch; "
      "build with nox -s build-rocm -- --arch gfx942")
  endif()
  string(REGEX REPLACE "--(offload-arch|amdgpu-target)=[^ ]+" "" _flags "${CMAKE_HIP_FLAGS}")
  set(CMAKE_HIP_FLAGS "${_flags}" PARENT_SCOPE)
  set(_defines -D__HIP_PLATFORM_AMD__=1 -DUSE_ROCM=1 -DHIPBLAS_V2)
  message(STATUS "HIP arch: ${arch}")
  set(${cxx_out} ${_defines} PARENT_SCOPE)
  set(${hip_out} ${_defines} -DCUDA_HAS_FP16=1 -DHIP_ENABLE_WARP_SYNC_BUILTINS=1 -fno-gpu-rdc
      PARENT_SCOPE)
endfunction()

# The hipified twins of CUDA sources: the build backend (devkit.toolchains.rocm) runs
# torch's hipify on csrc/ into `hipified_dir`, which names X.cu's twin X.hip.
function(vllm_hipified_sources out_var hipified_dir)
  if(NOT hipified_dir OR NOT IS_DIRECTORY "${hipified_dir}")
    message(FATAL_ERROR
      "VLLM_HIPIFIED_DIR='${hipified_dir}' is not a directory; build with nox -s build-rocm, "
      "whose build backend hipifies csrc/ into the build directory")
  endif()
  set(_sources)
  foreach(_cu IN LISTS ARGN)
    get_filename_component(_name "${_cu}" NAME_WE)
    set(_hip "${hipified_dir}/${_name}.hip")
    if(NOT EXISTS "${_hip}")
      message(FATAL_ERROR "${_hip} is missing: hipify did not translate ${_cu}")
    endif()
    list(APPEND _sources "${_hip}")
  endforeach()
  set(${out_var} ${_sources} PARENT_SCOPE)
endfunction()

# The oldest torch the binary runs under, as TORCH_TARGET_VERSION's value:
# "2.10" -> 0x020a000000000000 (major, minor, patch, tweak bytes, then zeros).
# With it defined, torch's headers offer only the stable ABI (torch/csrc/stable,
# torch/headeronly) as of that version, and refuse ATen (#error): the binary
# then calls torch only through its versioned C shim and loads under any torch
# at or above the floor. `floor`: the plan's build_info.torch_floor, which the
# build info records too.
function(vllm_torch_target_version out_var floor)
  if(NOT floor MATCHES "^([0-9]+)\\.([0-9]+)$")
    message(FATAL_ERROR "the plan's build_info.torch_floor '${floor}' is not MAJOR.MINOR "
      "(e.g. 2.10): set torch_floor of the target in tools/devkit/toolchains/targets.py")
  endif()
  math(EXPR _v "(${CMAKE_MATCH_1} << 8) + ${CMAKE_MATCH_2}" OUTPUT_FORMAT HEXADECIMAL)
  string(REGEX REPLACE "^0x" "" _v "${_v}")
  string(LENGTH "${_v}" _len)
  while(_len LESS 4)
    string(PREPEND _v "0")
    math(EXPR _len "${_len} + 1")
  endwhile()
  message(STATUS "Torch stable ABI floor: ${floor} (TORCH_TARGET_VERSION=0x${_v}000000000000)")
  set(${out_var} "0x${_v}000000000000" PARENT_SCOPE)
endfunction()

# Defines a stable-ABI Python extension module linked against torch, whose
# ops register for DISPATCH_KEY, and installs it into the package directory
# DESTINATION.
# TORCH_TARGET_VERSION (vllm_torch_target_version), when given, puts every
# source on torch's stable ABI.
function(vllm_define_extension name)
  cmake_parse_arguments(ARG "" "DESTINATION;DISPATCH_KEY;TORCH_TARGET_VERSION"
                        "SOURCES;COMPILE_FLAGS;CUDA_FLAGS;HIP_FLAGS" ${ARGN})
  Python_add_library(${name} MODULE USE_SABI 3.9 WITH_SOABI ${ARG_SOURCES})
  target_compile_definitions(${name} PRIVATE
    "-DTORCH_EXTENSION_NAME=${name}" "-DPy_LIMITED_API=0x03090000"
    "-DVLLM_DISPATCH_KEY=${ARG_DISPATCH_KEY}")
  if(ARG_TORCH_TARGET_VERSION)
    target_compile_definitions(${name} PRIVATE
      "-DTORCH_TARGET_VERSION=${ARG_TORCH_TARGET_VERSION}")
  endif()
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${ARG_COMPILE_FLAGS}>
    $<$<COMPILE_LANGUAGE:CUDA>:${ARG_CUDA_FLAGS}>
    $<$<COMPILE_LANGUAGE:HIP>:${ARG_HIP_FLAGS}>)
  target_include_directories(${name} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
  target_link_libraries(${name} PRIVATE ${VLLM_TORCH_LINK})
  # One CUDA runtime per process: torch's shared libcudart, not a static
  # copy inside the extension (CMake's default).
  set_target_properties(${name} PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
  # torch/lib sits beside the package in site-packages: `import vllm._C`
  # then works without importing torch first.
  # An editable install keeps it in <build dir>/editable (tools/devkit/build/presets.py),
  # away from site-packages: there torch's own lib dir is named too.
  set(rpath "$ORIGIN/../torch/lib")
  if(SKBUILD_STATE STREQUAL "editable")
    list(APPEND rpath "${TORCH_INSTALL_PREFIX}/lib")
  endif()
  # Built with its install RPATH, as it is installed by copy and rename below.
  set_target_properties(${name} PROPERTIES INSTALL_RPATH "${rpath}"
                                           BUILD_WITH_INSTALL_RPATH ON)
  # install(TARGETS) unlinks the installed file, then writes it again in place: a test
  # importing the extension meanwhile (a build in another terminal) finds none or
  # half of one. A copy beside it renamed over it is atomic: the old file or the new.
  install(CODE "set(_vllm_src \"$<TARGET_FILE:${name}>\")\nset(_vllm_dest \"${ARG_DESTINATION}\")"
          COMPONENT ${name})
  install(SCRIPT "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/install_atomically.cmake" COMPONENT ${name})
endfunction()

# Writes _build_info.json (what this binary was built with and for) and
# installs it beside the extension; vllm.build_info reads it at runtime, and
# the precompiled path compares it with the venv before using a wheel.
# `plan`: the plan's JSON (vllm_read_plan), whose build_info the plan decided
# (target, torch, GPU runtime and arch, ABI floor, git commit); this adds what
# only CMake and the compiler know.
function(vllm_write_build_info destination plan)
  string(JSON _json GET "${plan}" build_info)
  macro(_put_string key value)
    if("${value}" STREQUAL "")
      string(JSON _json SET "${_json}" "${key}" "null")
    else()
      string(JSON _json SET "${_json}" "${key}" "\"${value}\"")
    endif()
  endmacro()
  if(VLLM_TARGET_DEVICE STREQUAL "cpu")
    _put_string(cpu_isa "${VLLM_CPU_ISA_RESOLVED}")  # "auto", resolved by vllm_cpu_isa_flags
  else()
    _put_string(cpu_isa "")
  endif()
  # Torch's flags carry its C++ ABI; without the define, GCC's default (1).
  set(_abi 1)
  if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=([01])")
    set(_abi ${CMAKE_MATCH_1})
  endif()
  string(JSON _json SET "${_json}" cxx11_abi "${_abi}")
  set(_compiler "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}")
  if(CMAKE_CUDA_COMPILER_VERSION)
    string(APPEND _compiler ", nvcc ${CMAKE_CUDA_COMPILER_VERSION}")
  endif()
  if(CMAKE_HIP_COMPILER_VERSION)
    string(APPEND _compiler ", HIP ${CMAKE_HIP_COMPILER_ID} ${CMAKE_HIP_COMPILER_VERSION}")
  endif()
  _put_string(compiler "${_compiler}")
  _put_string(build_type "${CMAKE_BUILD_TYPE}")  # CMAKE_ARGS may have changed the plan's
  if(CMAKE_CXX_STANDARD)
    string(JSON _json SET "${_json}" cxx_standard "${CMAKE_CXX_STANDARD}")
  else()
    string(JSON _json SET "${_json}" cxx_standard "null")  # the compiler's default
  endif()
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/_build_info.json" "${_json}\n")
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/_build_info.json" DESTINATION ${destination})
endfunction()
