"""YAML loading that remembers where every key and list item starts.

Recipe errors must point at a line, so the loader records, for each key path such as
('stages', 2, 'compute_MVBS', 'range_bin'), the 1-based line of its key (or item).
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class YamlIssue(ValueError):
    """A YAML problem found while loading (syntax or duplicate key), with its line."""

    def __init__(self, line: int | None, path: Path, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message


class _LineLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[Path, int] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        self.lines[()] = node.start_mark.line + 1
        self._walk(node, ())
        return super().construct_document(node)

    def _walk(self, node: yaml.Node, path: Path) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int)):
                    key = str(key)
                here = path + (key,)
                if key in seen:
                    # SafeLoader keeps the last silently; a recipe with two `stages:` is a mistake.
                    raise YamlIssue(key_node.start_mark.line + 1, here, f"duplicate key {key!r}")
                seen.add(key)
                self.lines[here] = key_node.start_mark.line + 1
                self._walk(value_node, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self._walk(item, path + (i,))


def load(text: str) -> tuple[Any, dict[Path, int]]:
    """The YAML document in `text` and the line of each key path."""
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(str(exc.problem or exc).split())
        raise YamlIssue(line, (), f"not valid YAML ({what})") from None
    except yaml.YAMLError as exc:
        raise YamlIssue(None, (), f"not valid YAML ({' '.join(str(exc).split())})") from None
    finally:
        loader.dispose()
    return data, loader.lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """Line of `path`, or of its nearest ancestor written in the file (a missing key's parent)."""
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None
