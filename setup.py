"""Build hook: ship the renderer's files inside the package.

Templates, the built-in hand-written pages, the base mkdocs config and the examples a built-in
page includes stay at the top level of the repository, where people edit them; package-data can
only take files under a package folder. So the build copies them into ``generator/_resources/``
of the wheel, keeping their repository layout, and ``generator.resources`` finds them there (or in
the checkout, for an editable install). Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

# Keep in step with generator.resources.SHIPPED (tests/test_packaging.py checks the wheel holds them).
SHIPPED = ("templates", "site_src", "mkdocs.yml", "examples/github-actions")
HERE = os.path.dirname(os.path.abspath(__file__))


def _shipped_files():
    """(path relative to the repository root) of every file to ship, in a stable order."""
    for entry in SHIPPED:
        path = os.path.join(HERE, entry)
        if os.path.isfile(path):
            yield entry
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                yield os.path.relpath(os.path.join(folder, name), HERE)


class BuildWithResources(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads them from the checkout
        for rel, target in self._resource_targets():
            self.mkpath(os.path.dirname(target))
            self.copy_file(os.path.join(HERE, rel), target, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [target for _, target in self._resource_targets()]

    def _resource_targets(self):
        base = os.path.join(self.build_lib, "generator", "_resources")
        return [(rel, os.path.join(base, rel)) for rel in _shipped_files()]


setup(cmdclass={"build_py": BuildWithResources})
