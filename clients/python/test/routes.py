"""The gateway's route table, read from the router's source.

Parsing is chosen over probing because only the source can list a route
nobody thought of probing. To stay robust the parser understands the few
shapes the router uses (`(METHOD, [segments]) | ... [if guard] => rhs`) and
refuses anything else: every arm of each match must be understood, so a
new arm of an unknown shape fails the test instead of being missed.

Routes come out as (method, path) with `{}` for a path parameter and `*`
for "any method".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROUTER = "src/http/mod.rs"
API = "src/http/api/mod.rs"
CONSOLE = "src/http/console.rs"


class RouteParseError(AssertionError):
    pass


@dataclass(frozen=True)
class Arm:
    pattern: str
    rhs: str


def _match_body(source: str, anchor: str, on: str = "") -> str:
    """The text inside the braces of the first `match` after `anchor` (whose scrutinee names `on`)."""
    start = source.find(anchor)
    if start < 0:
        raise RouteParseError(f"no {anchor!r} in the router source")
    # With `on`, the match whose scrutinee names it (the router decodes the
    # path in an earlier match).
    position = start
    while True:
        position = source.find("match ", position)
        if position < 0:
            raise RouteParseError(f"no match on {on!r} after {anchor!r}")
        open_brace = source.find("{", position)
        if on in source[position:open_brace]:
            break
        position = open_brace
    depth = 0
    for i in range(open_brace, len(source)):
        if source[i] == "{":
            depth += 1
        elif source[i] == "}":
            depth -= 1
            if depth == 0:
                return source[open_brace + 1 : i]
    raise RouteParseError(f"unbalanced match after {anchor!r}")


def _find_top(text: str, start: int, needle: str) -> int:
    """Index of the first `needle` at bracket depth 0 outside string literals, or -1."""
    depth, i, in_string = 0, start, False
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif depth == 0 and text.startswith(needle, i):
            return i
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return -1


def _split_top(text: str, separator: str) -> list[str]:
    parts, i = [], 0
    while True:
        j = _find_top(text, i, separator)
        if j < 0:
            parts.append(text[i:].strip())
            return parts
        parts.append(text[i:j].strip())
        i = j + len(separator)


def _arms(body: str) -> list[Arm]:
    """The arms of a match body: pattern up to a top-level `=>`, then a block
    or an expression ending at a top-level comma."""
    body = re.sub(r"//[^\n]*", "", body)
    arms: list[Arm] = []
    i = 0
    while body[i:].strip():
        arrow = _find_top(body, i, "=>")
        if arrow < 0:
            raise RouteParseError(f"cannot read a match arm from {body[i:].strip()[:80]!r}")
        pattern = body[i:arrow].strip()
        k = arrow + 2
        while body[k].isspace():
            k += 1
        if body[k] == "{":
            depth, close = 1, k + 1
            while depth:
                depth += {"{": 1, "}": -1}.get(body[close], 0)
                close += 1
            rhs, i = body[k:close], close
            while i < len(body) and body[i].isspace():
                i += 1
            if i < len(body) and body[i] == ",":
                i += 1
        else:
            comma = _find_top(body, k, ",")
            comma = len(body) if comma < 0 else comma
            rhs, i = body[k:comma], comma + 1
        arms.append(Arm(pattern, rhs.strip()))
    return arms


_ALTERNATIVE = re.compile(r"^\(\s*(_|&Method::([A-Z]+))\s*,\s*\[(.*)\]\s*\)$", re.S)


def _segments(raw: str) -> list[list[str]]:
    """Each segment's possible values: literals, `{}` (a parameter) or `..` (the rest)."""
    out: list[list[str]] = []
    for segment in _split_top(raw, ","):
        if not segment:
            continue
        if re.fullmatch(r'("[^"]*"\s*\|?\s*)+', segment):
            out.append(re.findall(r'"([^"]*)"', segment))
        elif re.fullmatch(r"(\w+\s*@\s*)?\.\.", segment):
            out.append([".."])
        elif re.fullmatch(r"_|[a-z_][a-z0-9_]*", segment):
            out.append(["{}"])
        else:
            raise RouteParseError(f"unknown segment pattern {segment!r}")
    return out


def _expand(segments: list[list[str]]) -> list[str]:
    paths = [""]
    for choices in segments:
        paths = [p + "/" + c for p in paths for c in choices]
    return paths


def _routes_of(arms: list[Arm]) -> tuple[list[tuple[str, str, Arm]], list[Arm]]:
    """(method, path, arm) for each served route, and the fallback arms."""
    routes, fallbacks = [], []
    for arm in arms:
        if arm.pattern == "_" or "method_not_allowed" in arm.rhs:
            fallbacks.append(arm)
            continue
        pattern = re.sub(r"\s+if\s+.*$", "", arm.pattern, flags=re.S)
        for alternative in _split_top(pattern, "|"):
            found = _ALTERNATIVE.match(alternative)
            if not found:
                raise RouteParseError(f"unknown arm pattern {alternative!r}")
            method = found.group(2) or "*"
            for path in _expand(_segments(found.group(3))):
                routes.append((method, path, arm))
    return routes, fallbacks


def console_assets(repo: Path) -> list[str]:
    """The routes of the console's asset table (`ASSETS`) and the aliases of `asset`."""
    source = (repo / CONSOLE).read_text()
    table_start = source.find("const ASSETS")
    if table_start < 0:
        raise RouteParseError("no ASSETS table in the console source")
    table = source[table_start : source.index("];", table_start)]
    paths = re.findall(r'\(\s*"(/console[^"]*)"', table)
    if not paths:
        raise RouteParseError("the console ASSETS table lists no route")
    body = _match_body(source, "pub fn asset")
    for arm in _arms(body):
        if not arm.pattern.startswith('"'):
            continue
        literals = re.findall(r'"([^"]*)"', arm.pattern)
        if not re.fullmatch(r'("[^"]*"\s*\|?\s*)+', arm.pattern):
            raise RouteParseError(f"unknown console arm {arm.pattern!r}")
        paths.extend(literals)
    return paths


def served_routes(repo: Path) -> set[tuple[str, str]]:
    """Every (method, path) the router answers, parameters as `{}`."""
    top, top_fallbacks = _routes_of(_arms(_match_body((repo / ROUTER).read_text(), "pub async fn route", on="method")))
    api, api_fallbacks = _routes_of(_arms(_match_body((repo / API).read_text(), "async fn dispatch")))
    if len(top_fallbacks) != 1 or len(api_fallbacks) != 2:
        raise RouteParseError(
            f"expected one fallback arm in route() and two in dispatch(), got "
            f"{[a.pattern for a in top_fallbacks]} and {[a.pattern for a in api_fallbacks]}"
        )
    served: set[tuple[str, str]] = set()
    for method, path, arm in top:
        if path.endswith("/.."):
            prefix = path[: -len("/..")]
            if "api::handle" in arm.rhs:
                served |= {(m, prefix + p) for m, p, _ in api}
            elif "console::asset" in arm.rhs:
                served |= {(method, p) for p in console_assets(repo) if p.startswith(prefix)}
            else:
                raise RouteParseError(f"a `..` route with an unknown handler: {arm.rhs!r}")
        else:
            served.add((method, path))
    return served
