"""``mobile_nodes_file``: the policy profiles of a large fleet, one CSV line per mobile node.

A YAML ``mobile_nodes`` list costs a validated model per node: fine for hundreds, minutes
and gigabytes for a million. This file format keeps the same fields and the same rules
but is read as a stream, and the nodes that share a policy share one validated
:class:`MnProfile` (the engines look a profile up by the identifier in the PBU and never
read the profile's own ``mn_id``, which is therefore empty here).

Format: CSV (comma-separated, double quotes allowed), a header line naming the columns,
then one line per mobile node. Blank lines and lines starting with ``#`` are ignored.
Columns, named like the YAML keys of ``mobile_nodes[]`` (only ``mn_id`` is required; a
missing column or an empty cell takes the YAML default)::

    mn_id, ipv6, ipv4.mode, ipv4.address, ipv4.default_router, ipv4.pool, ipv4.prefix,
    lma, link_layer_ids        (MAC addresses separated by spaces)

For example::

    mn_id,ipv6,ipv4.mode,ipv4.pool
    mn0000001@example.net,false,lma,home
    mn0000002@example.net,true,lma,
    mn0000003@example.net,true,none,

A problem is reported as ``<file>:<line>: <column>: <reason>``; a policy that many lines
share is checked, and reported, once, at its first line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .core.policy import Ipv4Mode, MnProfile

if TYPE_CHECKING:
    from .config import AgentConfig, Problem

__all__ = ["COLUMNS", "MAX_PROBLEMS", "read_mobile_nodes_file"]

COLUMNS = (
    "mn_id",
    "ipv6",
    "ipv4.mode",
    "ipv4.address",
    "ipv4.default_router",
    "ipv4.pool",
    "ipv4.prefix",
    "lma",
    "link_layer_ids",
)
MAX_PROBLEMS = 50  # a broken generator can produce a million of the same mistake
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
_BOOLS["FALSE"] = False


class _TooMany(Exception):
    pass


def _policy_data(cells: dict[str, str]) -> dict[str, Any]:
    """The mapping ``MobileNodeConfig`` validates, from a row's non-empty policy cells."""
    data: dict[str, Any] = {"mn_id": "x"}  # checked apart, per row
    ipv4: dict[str, Any] = {}
    for column, text in cells.items():
        if column == "ipv6":
            data["ipv6"] = _BOOLS.get(text, text)  # not a boolean: the model says so
        elif column == "link_layer_ids":
            data["link_layer_ids"] = text.split()
        elif column.startswith("ipv4."):
            ipv4[column[5:]] = text
        else:
            data[column] = text
    if ipv4:
        data["ipv4"] = ipv4
    return data


def _column_of(loc: tuple[str | int, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) or "(row)"


def read_mobile_nodes_file(
    path: Path,
    config: AgentConfig,
    check_node: Callable[[Any, Callable[[tuple[str | int, ...], str], None]], None],
    parse_nai: Callable[[object], str],
    taken: dict[str, set[Any]],
) -> tuple[dict[bytes, MnProfile], list[Problem]]:
    """Read and validate ``path``. ``check_node(node, report)`` applies the role's cross
    checks to a validated ``MobileNodeConfig``; ``taken`` holds what the YAML list already
    uses ("mn_id", "static address", "link-layer id"). Returns the profiles keyed by MN
    identifier bytes, and the problems (at most MAX_PROBLEMS, then a last one saying so)."""
    from .config import MobileNodeConfig, Problem

    problems: list[Problem] = []
    shown = os.fspath(path)

    def problem(line: int, column: str, reason: str) -> None:
        if len(problems) >= MAX_PROBLEMS:
            problems.append(Problem(shown, f"more than {MAX_PROBLEMS} problems; stopped"))
            raise _TooMany
        problems.append(Problem(f"{shown}:{line}: {column}", reason))

    try:
        handle = open(path, encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
    except OSError as exc:
        return {}, [Problem(shown, f"cannot read mobile_nodes_file: {exc.strerror or exc}")]
    profiles: dict[bytes, MnProfile] = {}
    try:
        with handle:
            _read(handle, profiles, problem, check_node, parse_nai, taken, MobileNodeConfig)
    except _TooMany:
        pass
    except UnicodeDecodeError as exc:
        problems.append(Problem(shown, f"not UTF-8 text: {exc.reason}"))
    except csv.Error as exc:
        problems.append(Problem(shown, f"not valid CSV: {exc}"))
    except OSError as exc:
        problems.append(Problem(shown, f"cannot read mobile_nodes_file: {exc.strerror or exc}"))
    return profiles, problems


def _read(
    handle: Any,
    profiles: dict[bytes, MnProfile],
    problem: Callable[[int, str, str], None],
    check_node: Callable[[Any, Callable[[tuple[str | int, ...], str], None]], None],
    parse_nai: Callable[[object], str],
    taken: dict[str, set[Any]],
    model: Any,
) -> None:
    reader = csv.reader(handle, skipinitialspace=True)
    for header in reader:
        if header and not header[0].startswith("#") and any(c.strip() for c in header):
            break
    else:
        return  # an empty file: no mobile nodes
    header_at = reader.line_num
    header = [h.strip() for h in header]
    header_bad = False
    for column in header:
        if column not in COLUMNS:
            header_bad = True
            problem(header_at, column or "(empty)", f"unknown column; known: {', '.join(COLUMNS)}")
    if "mn_id" not in header:
        header_bad = True
        problem(header_at, "mn_id", "required column missing from the header")
    if len(set(header)) != len(header):
        header_bad = True
        problem(header_at, "(header)", "a column is named twice")
    if header_bad:
        return
    id_at = header.index("mn_id")
    policy_columns = [c for c in header if c != "mn_id"]
    width = len(header)
    # One validation per distinct policy (the row without its mn_id): a fleet has a
    # handful, whatever its size. The value: the shared profile (None if invalid), and
    # whether it holds what must be unique (a static address, MACs).
    policies: dict[tuple[str, ...], tuple[MnProfile | None, bool]] = {}
    static_at: dict[Any, int] = {}
    mac_at: dict[bytes, int] = {}
    yaml_ids = {i.encode() for i in taken.get("mn_id", ())}
    invalid: set[bytes] = set()
    yaml_static = taken.get("static address", set())
    yaml_macs = taken.get("link-layer id", set())
    for row in reader:
        if len(row) != width:
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].startswith("#"):
                continue
            problem(reader.line_num, "(row)", f"{len(row)} cells where the header has {width}")
            continue
        text = row[id_at]
        if text.startswith("#"):
            continue
        if text.isascii() and text.isprintable() and " " not in text and 0 < len(text) <= 254:
            mn_id = text.encode()
        else:
            try:
                mn_id = parse_nai(text.strip()).encode("utf-8")
            except ValueError as exc:
                problem(reader.line_num, "mn_id", str(exc))
                continue
        row[id_at] = ""
        key = tuple(row)
        found = policies.get(key)
        if found is None:
            cells = [c.strip() for i, c in enumerate(row) if i != id_at]
            valid = _validate(
                dict(zip(policy_columns, cells, strict=True)),
                reader.line_num,
                problem,
                check_node,
                model,
            )
            unique = valid is not None and (
                valid.ipv4_mode is Ipv4Mode.STATIC or bool(valid.link_layer_ids)
            )
            found = policies[key] = (valid, unique)
        if mn_id in profiles or mn_id in yaml_ids or mn_id in invalid:
            where = "mobile_nodes" if mn_id in yaml_ids else "an earlier line"
            problem(reader.line_num, "mn_id", f"duplicate mn_id {text!r} (also in {where})")
            continue
        profile, unique = found
        if profile is None:
            invalid.add(mn_id)  # reported with its policy; still an identifier in use
            continue
        if unique:
            line = reader.line_num
            hoa = profile.ipv4_hoa
            if hoa is not None:
                if hoa in static_at or hoa in yaml_static:
                    where = f"line {static_at[hoa]}" if hoa in static_at else "mobile_nodes"
                    problem(line, "ipv4.address", f"duplicate static address '{hoa}' ({where})")
                    continue
                static_at[hoa] = line
            for mac in profile.link_layer_ids:
                if mac in mac_at or mac in yaml_macs:
                    where = f"line {mac_at[mac]}" if mac in mac_at else "mobile_nodes"
                    problem(
                        line,
                        "link_layer_ids",
                        f"duplicate link-layer id {mac.hex(':')!r} ({where})",
                    )
                mac_at[mac] = line
        profiles[mn_id] = profile


def _validate(
    row: dict[str, str],
    line: int,
    problem: Callable[[int, str, str], None],
    check_node: Callable[[Any, Callable[[tuple[str | int, ...], str], None]], None],
    model: Any,
) -> MnProfile | None:
    cells = {column: text for column, text in row.items() if text}
    try:
        node = model.model_validate(_policy_data(cells))
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            cause = (err.get("ctx") or {}).get("error")
            loc = tuple(err["loc"])
            sub = getattr(cause, "problems", None)
            if sub:
                for rel, reason, _refs in sub:
                    problem(line, _column_of((*loc, *rel)), reason)
            elif err["type"] in ("value_error", "assertion_error") and cause is not None:
                problem(line, _column_of(loc), str(cause))
            else:
                problem(line, _column_of(loc), f"{err['msg']}, got {err.get('input')!r}")
        return None
    found: list[tuple[tuple[str | int, ...], str]] = []
    check_node(node, lambda loc, reason: found.append((loc, reason)))
    if found:
        for loc, reason in found:
            problem(line, _column_of(loc), reason)
        return None
    return replace(node.profile(), mn_id=b"")
