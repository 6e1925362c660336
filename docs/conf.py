"""Sphinx configuration: MyST Markdown pages, the furo theme, autodoc for the API reference."""

from __future__ import annotations

import asyncjobs

project = "asyncjobs"
author = "asyncjobs developers"
copyright = "asyncjobs developers"
version = release = asyncjobs.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"asyncjobs {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Docstrings refer to private helpers and to names by their short form; a
# missing cross-reference must not fail the build.
nitpicky = False
