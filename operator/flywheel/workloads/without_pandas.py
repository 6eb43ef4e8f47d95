"""A snapshot runs without pandas: pyarrow would import it for nothing.

pyarrow imports pandas the first time it converts Python values (a
`pa.scalar`, `pa.array` of a list, a compute function given a Python
number) to recognise pandas objects among them; the snapshot never hands it
any. On the scale benchmark's data that import was ~0.2 s of a 1.6-1.9 s
snapshot and ~35 MB of its peak memory, with the profile byte-identical
without it. pyarrow is built to work where pandas is not installed, so while
the scan runs pandas is made not importable: pyarrow's import attempts fail
and it goes on without (its C++ side tries again at each conversion, which
the refusal answers at once). Anything that later needs pandas for real
(`Table.to_pandas`) imports it as usual once the block is lifted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _RefusePandas:
    """An import-system finder that refuses pandas and its submodules."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(
                f"{name} is not loaded during a dataset snapshot (workloads/without_pandas.py)",
                name=name,
            )


@contextmanager
def pandas_not_importable() -> Iterator[None]:
    """Refuse `import pandas` inside the block, unless it is loaded already
    (a test process: then there is nothing to save)."""
    if "pandas" in sys.modules:
        yield
        return
    sys.meta_path.insert(0, _RefusePandas)  # type: ignore[arg-type]
    try:
        yield
    finally:
        sys.meta_path.remove(_RefusePandas)  # type: ignore[arg-type]
