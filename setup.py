"""The build step setuptools cannot express in pyproject.toml: hulld's containerd shim v2 messages.

hulld/runtimes/shim/protocol/*.proto declare the part of the shim API hulld speaks; their Python classes
(``*_pb2.py`` and their ``.pyi`` stubs) are generated here, at install time, with grpcio-tools' protoc, into the
source tree (so editable installs see them) before the usual build copies the packages. Nothing generated is
committed.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE_ROOT = Path(__file__).parent / "node-agent"
PROTOCOL = SOURCE_ROOT / "hulld" / "runtimes" / "shim" / "protocol"


class BuildWithProtocol(build_py):
    def run(self) -> None:
        import grpc_tools
        from grpc_tools import protoc

        well_known = Path(grpc_tools.__file__).parent / "_proto"
        for proto in sorted(PROTOCOL.glob("*.proto")):
            arguments = [
                "protoc",
                f"--proto_path={well_known}",
                f"--proto_path={SOURCE_ROOT}",
                f"--python_out={SOURCE_ROOT}",
                f"--pyi_out={SOURCE_ROOT}",
                str(proto.relative_to(SOURCE_ROOT)),
            ]
            if protoc.main(arguments) != 0:
                raise SystemExit(f"protoc could not compile {proto}")
        super().run()


setup(cmdclass={"build_py": BuildWithProtocol})
