"""The names under which asyncflow is distributed (L0: standard library only).

The import name and the command are ``asyncflow``; the distribution on PyPI is
``asyncflow-dag``, because the name ``asyncflow`` belongs to an unrelated project. Error
messages that tell the user what to install use :func:`install_hint`, so they fit an
installed package as well as a checkout.
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "install_hint"]

DISTRIBUTION = "asyncflow-dag"
"""The distribution name: ``pip install asyncflow-dag``; ``importlib.metadata`` uses it too."""


def install_hint(extra: str) -> str:
    """The pip command that installs the optional dependencies of ``extra`` (e.g. ``"trio"``).

    >>> install_hint("trio")
    "pip install 'asyncflow-dag[trio]'"
    """
    return f"pip install '{DISTRIBUTION}[{extra}]'"
