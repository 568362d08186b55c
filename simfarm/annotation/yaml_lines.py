"""Line numbers for validation errors in YAML files: ``file:line: field: message``.

pydantic reports *where* in the data a value is wrong (``outcome.function``); a person
fixing the file wants the line. The YAML is composed once more (node tree, with marks) and the
error's location is followed down it; the deepest node that exists gives the line.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml


def line_of(text: str, loc: Sequence[int | str]) -> int | None:
    """1-based line of the value at ``loc`` in the YAML ``text`` (or of its nearest existing
    parent: a missing field points at the mapping that lacks it); None if unparsable."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    # A scalar value sits on its key's line; report the key's line.
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
