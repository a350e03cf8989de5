"""The public entry points: :func:`load`, :func:`loads` and :func:`dump`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import yaml

from fqdnpolicy.errors import InvalidPolicy, Problem
from fqdnpolicy.loading.converter import CONVERTER
from fqdnpolicy.loading.documents import Context, Where, process
from fqdnpolicy.loading.reading import MAX_INPUT_BYTES, add_yaml12_floats, read_json, read_yaml
from fqdnpolicy.model import (
    CALICO_API_VERSION,
    ObjectMeta,
    Resource,
    ResourceSet,
)

_SUFFIXES: Final = (".yaml", ".yml", ".json")

# ============================================================================================
# Public API
# ============================================================================================


def _load_text(text: str, filename: str, ctx: Context, *, json_fallback: bool) -> None:
    if len(text) > MAX_INPUT_BYTES:
        ctx.problems.append(
            Problem(
                f"input too large: {len(text)} characters (the limit is {MAX_INPUT_BYTES})",
                file=filename,
                hint="split it into several files",
                code="too-large",
            )
        )
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Only a str built in Python (loads) can hold a lone surrogate; no reader takes one.
        ctx.problems.append(
            Problem(
                f"not valid Unicode text: a lone surrogate at character {exc.start}",
                file=filename,
                hint="decode the input with errors='strict' or remove the character",
                code="encoding",
            )
        )
        return
    docs, problems = read_yaml(text, filename)
    if problems and json_fallback and any(p.code == "yaml-syntax" for p in problems):
        json_docs, json_problems = read_json(text, filename)
        # Not JSON either: the YAML problems say more. Otherwise JSON's answer stands.
        if json_docs or any(p.code != "json-syntax" for p in json_problems):
            docs, problems = json_docs, json_problems
    ctx.problems += problems
    for doc in docs:
        process(doc.value, Where(filename, doc.lines, "", doc.line), ctx, None)


def _finish(ctx: Context) -> ResourceSet:
    if ctx.problems:
        raise InvalidPolicy(sorted(ctx.problems, key=lambda p: (p.file or "", p.line or 0)))
    return ResourceSet(tuple(ctx.policies), tuple(ctx.network_sets), tuple(ctx.tiers))


def loads(text: str, *, filename: str = "<string>", skip_unknown: bool = False) -> ResourceSet:
    """Load resources from a YAML or JSON string.

    Args:
        text: One or more YAML documents (JSON is YAML too).
        filename: Name used in problem locations and :class:`~fqdnpolicy.model.SourceLocation`.
        skip_unknown: Ignore documents of kinds that are not policy resources (Deployments,
            Services...) instead of reporting them. A policy kind under an apiVersion we do not
            read is still reported.

    Returns:
        Every resource in the text.

    Raises:
        InvalidPolicy: With every problem found, each located by file, line and field path.
    """
    ctx = Context(skip_unknown=skip_unknown)
    if not isinstance(text, str):
        raise InvalidPolicy(Problem(f"expected text, got {type(text).__name__}", file=filename))
    _load_text(text, filename, ctx, json_fallback=True)
    return _finish(ctx)


def _files(path: Path, ctx: Context) -> Iterator[Path]:
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file()]
        yield from sorted(found)
    elif path.is_file():
        yield path
    else:
        ctx.problems.append(
            Problem(
                f"no such file or directory: {path}",
                file=str(path),
                hint="check the path",
                code="no-such-file",
            )
        )


def load(*paths: str | os.PathLike[str], skip_unknown: bool = False) -> ResourceSet:
    """Load resources from files and directories.

    Directories are searched recursively for ``*.yaml``, ``*.yml`` and ``*.json`` files, read
    in sorted order.

    Args:
        *paths: Files and directories.
        skip_unknown: Ignore documents of kinds that are not policy resources (Deployments,
            Services...) instead of reporting them. A policy kind under an apiVersion we do not
            read is still reported.

    Returns:
        Every resource found, in order (files in the order given, directory entries sorted).

    Raises:
        InvalidPolicy: With every problem found in every file; nothing is returned then.
    """
    ctx = Context(skip_unknown=skip_unknown)
    for raw in paths:
        for file in _files(Path(raw), ctx):
            name = str(file)
            try:
                if file.stat().st_size > MAX_INPUT_BYTES:
                    ctx.problems.append(
                        Problem(
                            f"file too large: {file.stat().st_size} bytes "
                            f"(the limit is {MAX_INPUT_BYTES})",
                            file=name,
                            hint="split it into several files",
                            code="too-large",
                        )
                    )
                    continue
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                ctx.problems.append(
                    Problem(
                        f"not UTF-8 text: {exc.reason} at byte {exc.start}",
                        file=name,
                        hint="save the file as UTF-8",
                        code="encoding",
                    )
                )
                continue
            except OSError as exc:
                ctx.problems.append(
                    Problem(f"cannot read file: {exc.strerror}", file=name, code="io")
                )
                continue
            _load_text(text, name, ctx, json_fallback=file.suffix.lower() == ".json")
    return _finish(ctx)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Quotes every string the reader would take for another type, such as ``1e5``."""


add_yaml12_floats(_Dumper)


def _resource_dict(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": CALICO_API_VERSION,
        "kind": resource.kind,
        "metadata": CONVERTER.unstructure(resource.metadata, ObjectMeta),
    }
    spec = CONVERTER.unstructure(resource.spec, type(resource.spec))
    if spec:
        out["spec"] = spec
    return out


def dump(resources: ResourceSet, *, format: str = "yaml") -> str:
    """Write resources in canonical form.

    Canonical: tiers, then network sets, then policies, each in set order; keys in a fixed
    order; selectors, domains and CIDRs in canonical text; fields at their default omitted;
    policy ``types`` always explicit. Converted Kubernetes policies are written as the Calico
    policies they became. ``loads(dump(rs)) == rs`` and ``dump(loads(dump(rs))) == dump(rs)``.

    Args:
        resources: What to write.
        format: ``"yaml"`` (multi-document) or ``"json"`` (a ``kind: List``).

    Returns:
        The text.

    Raises:
        ValueError: ``format`` is neither ``yaml`` nor ``json``.
    """
    docs = [_resource_dict(r) for r in resources]
    if format == "yaml":
        return yaml.dump_all(
            docs,
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=4096,  # keep selectors on one line
        )
    if format == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2) + "\n"
    raise ValueError(f"unknown format {format!r}: use 'yaml' or 'json'")
