"""Set one key of one section of a config.ini in place, keeping every comment and every other line.

`python3 deploy/config_set.py CONFIG SECTION KEY VALUE`: how deploy/install.sh writes the values it was given
on its command line ([index] url and password_file, [spool] node) into /etc/mo-spool/config.ini. A key an
older config.ini lacks is added to its section (the section too, if need be); the file is replaced whole by
a rename, with its mode and owner kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def set_key(text: str, section: str, key: str, value: str) -> str:
    """The text with ``key = value`` in ``[section]``: its line replaced, else added right after the section's
    header (a config.ini of an older release lacks the newer keys), else the section added at the end."""
    lines = text.splitlines(keepends=True)
    current, header = None, None
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
            header = number if current == section else header
        elif current == section and "=" in stripped and stripped.split("=", 1)[0].strip() == key:
            lines[number] = f"{key} = {value}\n"
            return "".join(lines)
    if header is not None:
        lines.insert(header + 1, f"{key} = {value}\n")
        return "".join(lines)
    ending = "" if not lines or lines[-1].endswith("\n") else "\n"
    return "".join(lines) + f"{ending}\n[{section}]\n{key} = {value}\n"


def main(argv: list[str]) -> None:
    if len(argv) != 4 or "\n" in argv[3]:
        raise SystemExit("usage: config_set.py CONFIG SECTION KEY VALUE (a value on one line)")
    path, section, key, value = Path(argv[0]), argv[1], argv[2], argv[3]
    changed = set_key(path.read_text(encoding="utf-8"), section, key, value)
    stat = path.stat()
    temp = path.with_name(f".{path.name}.new")
    temp.write_text(changed, encoding="utf-8")
    os.chmod(temp, stat.st_mode & 0o7777)
    os.chown(temp, stat.st_uid, stat.st_gid)
    temp.replace(path)


if __name__ == "__main__":
    main(sys.argv[1:])
