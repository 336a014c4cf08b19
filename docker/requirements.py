"""Print a wheel's own dependencies (its Requires-Dist without extras) as a requirements file.

The image installs them in a layer of their own before the wheel, so a source change rebuilds
the small package layer, not the multi-GB torch one::

    python docker/requirements.py dist/sononet-0.1.0-py3-none-any.whl > requirements.txt
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import Parser

# A requirement of an extra: `onnx>=1.17; extra == "export"` (the base image has no `packaging`).
EXTRA = re.compile(r";.*\bextra\s*==")


def requirements(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(z.read(name).decode())
    return [line for line in metadata.get_all("Requires-Dist") or [] if not EXTRA.search(line)]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docker/requirements.py WHEEL")
    print("\n".join(requirements(sys.argv[1])))
