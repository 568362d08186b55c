"""Ship the top-level data folders (annotators/, evals/, recipes/) inside the wheel.

They stay plain data at the top of the repository (the product layout), and are installed as
``simfarm/_data/<name>/`` so a non-editable ``pip install .`` can still find them. Everything
else lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("annotators", "evals", "recipes")


class BuildPyWithData(build_py):
    """Copy each data folder into ``simfarm/_data`` of the build tree."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).parent
        for name in DATA_FOLDERS:
            source = root / name
            if not source.is_dir():
                continue
            for path in source.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    target = (
                        Path(self.build_lib) / "simfarm" / "_data" / name / path.relative_to(source)
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.copy_file(str(path), str(target))


setup(cmdclass={"build_py": BuildPyWithData})
