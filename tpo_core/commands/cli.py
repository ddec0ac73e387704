"""The command lines' ``KEY=VALUE`` arguments, parsed in one place: ``--set NAME=VALUE`` (a Python literal, else
the string written) and ``--model-path HUB_ID=FOLDER`` (strings)."""

from __future__ import annotations

import ast

__all__ = ["key_values", "parse_settings"]


def key_values(items, what: str = "--model-path", form: str = "HUB_ID=FOLDER") -> dict[str, str]:
    """``["a=b", "c=d=e"]`` -> ``{"a": "b", "c": "d=e"}`` (split at the first ``=``); ``ValueError`` naming ``what``
    and ``form`` for an item with no ``=`` or an empty key."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects {form}, got {item!r}")
        out[key.strip()] = value
    return out


def parse_settings(items) -> dict:
    """``["seeds=[1, 2]", "preset=smoke"]`` -> ``{"seeds": [1, 2], "preset": "smoke"}``: each value is read as a
    Python literal (numbers, lists, ``None``, quoted strings), else kept as the string written."""
    out = {}
    for name, value in key_values(items, "a setting", "NAME=VALUE").items():
        if not name.isidentifier():
            raise ValueError(f"a setting is NAME=VALUE, got {name}={value!r}")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out
