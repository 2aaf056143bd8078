"""The build's last step: the extension imports, and it is the binary it should be.

Every op registered with a kernel for the target's dispatch key; no private
libstdc++ linked in; on the stable ABI, no symbol outside it (torch-abi-audit);
for CUDA, machine code for the arch it was built for (cuobjdump).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from devkit import DevkitError
from devkit.build import abi_audit
from devkit.foundation.files import sha256_of, show
from devkit.foundation.log import say
from devkit.foundation.procs import python_json
from devkit.toolchains import cuda, optable, toolchain

if TYPE_CHECKING:
    from devkit.build.pipeline import Setup


# The ops every build must register, by library (the op table's).
EXPECTED_OPS = optable.expected_ops()

# Run in the venv with the dispatch key as argv[1]; prints JSON.
SMOKE_CHECK = f"""
import json, sys, torch, vllm._C, vllm._custom_ops
key = sys.argv[1]
missing = [f"{{lib}}::{{op}}" for lib, ops in {EXPECTED_OPS!r}.items() for op in ops
           if not hasattr(getattr(torch.ops, lib), op)
           or not torch._C._dispatch_has_kernel_for_dispatch_key(f"{{lib}}::{{op}}", key)]
print(json.dumps({{"missing": missing, "so": vllm._C.__file__}}))
"""


def _extension_stamp(setup: Setup) -> str | None:
    """Identifies the installed extension binary by path and content.

    Every editable install rewrites the file, so its mtime changes even when
    ninja rebuilt nothing; its bytes don't.
    """
    installed = setup.plan.install_dir.glob("vllm/_C*.so") if setup.plan.install_dir else []
    for so in [
        *sorted(installed),
        *sorted(setup.path.glob("lib/python*/site-packages/vllm/_C*.so")),
    ]:
        return f"{so} {sha256_of(so)}"
    return None


def smoke_check(setup: Setup) -> None:
    """Import the extension with torch and check every op is registered.

    Importing torch takes seconds, so a binary that already passed (same
    path and bytes, recorded in the venv) is not checked again.
    """
    stamp_file = setup.build_dir / "smoke-checked"
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp = _extension_stamp(setup)
    if stamp and stamp_file.is_file() and stamp_file.read_text() == stamp:
        say("smoke check: passed before, and the extension is unchanged")
        return
    smoke = python_json(
        setup.python,
        SMOKE_CHECK,
        setup.target.dispatch_key,
        label=f"{show(setup.python)} -c <import vllm._C, check the ops>",
    )
    if smoke["missing"]:
        raise DevkitError(
            f"the build imported but lacks ops {', '.join(smoke['missing'])}; "
            "check csrc/torch_bindings.cpp registers them"
        )
    private = toolchain.private_libstdcxx(Path(smoke["so"]))
    if private:
        raise DevkitError(
            f"{Path(smoke['so']).name} defines libstdc++ internals ({private[0]}, "
            f"{len(private)} in all): a static library linked a private libstdc++ into it, "
            "and its error messages will crash; see CONTRIBUTING.md's troubleshooting"
        )
    count = sum(map(len, EXPECTED_OPS.values()))
    say(f"smoke check: {count} ops with {setup.target.dispatch_key} kernels in {smoke['so']}")
    if setup.plan.precompiled:
        pass  # a prebuilt wheel's binary, audited by the build that made it
    elif setup.target.torch_floor:
        exe = setup.path / "bin" / "torch-abi-audit"
        say(abi_audit.audit(exe, Path(smoke["so"]), setup.target.torch_floor))
    else:
        say(
            f"torch ABI: full C++ API ({setup.target.name} stays off the stable ABI): "
            "the binary needs exactly the torch it was built against"
        )
    if setup.plan.cuda:
        cuobjdump = cuda.find_cuobjdump(setup.path, setup.plan.cuda.home)
        if cuobjdump is None:
            say("cuobjdump not found (pip install nvidia-cuda-cuobjdump): machine code unchecked")
        else:
            say(cuda.check_machine_code(cuobjdump, Path(smoke["so"]), setup.plan.cuda.arch))
    stamp_file.write_text(stamp or _extension_stamp(setup) or "")
