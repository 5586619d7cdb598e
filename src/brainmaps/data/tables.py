"""The one reader of user tables: cohort tables, participants.tsv and atlas label tables.

Atlas region tables (:func:`read_label_table`) are read here, below ``analysis`` and
``baselines``, so that both read them the same way.

:func:`read_table` decides between tab-, comma- and semicolon-separated text from the
content (the header line), not only from the file name, so a CSV saved as ``.tsv`` is
read correctly; every value is read as text, and a table without rows is refused.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.exceptions import BrainmapsError, CohortError, ConfigError

__all__ = [
    "INDEX_COLUMNS",
    "NAME_COLUMNS",
    "TABLE_SUFFIXES",
    "check_label_table",
    "read_label_table",
    "read_table",
    "sniff_separator",
]

#: File name endings of tables.
TABLE_SUFFIXES = (".tsv", ".csv", ".txt")
_NAMES = {"\t": "tab-separated", ",": "comma-separated", ";": "semicolon-separated"}
_WHITESPACE = r"\s+"


def sniff_separator(header: str, suffix: str = "") -> str:
    """The column separator of a table, from its header line.

    Tabs win over commas, commas over semicolons; a header with none of them but
    several words is whitespace-separated (``r"\\s+"``, e.g. a FreeSurfer lookup table);
    a single column falls back to the file name (``,`` for ``.csv``, else a tab).

    Parameters
    ----------
    header : str
        The first line of the table.
    suffix : str
        The file name ending (``".tsv"``, ``".csv"``, ...).

    Returns
    -------
    str
    """
    for sep in ("\t", ",", ";"):
        if sep in header:
            return sep
    if len(header.split()) > 1:
        return _WHITESPACE
    return "," if suffix.lower() == ".csv" else "\t"


def _lines(path: Path, what: str, error: type[BrainmapsError], comments: bool) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
            "as a UTF-8 TSV or CSV file (is it a spreadsheet? export it as CSV)."
        ) from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror}); check the path.") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if comments:
        lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    if not lines:
        raise error(f"{what} {path} is empty; give a table with a header line and rows.")
    return lines


def read_table(
    path: str | os.PathLike,
    *,
    what: str = "table",
    error: type[BrainmapsError] = CohortError,
    header: bool = True,
    comments: bool = False,
    na_values: bool = True,
) -> pd.DataFrame:
    """Read a TSV / CSV / whitespace-separated text table, every value as text.

    Parameters
    ----------
    path : str or os.PathLike
        The file (any name: the separator comes from the content, see
        :func:`sniff_separator`).
    what : str
        How to name the file in messages (``"cohort table"``, ``"labels"``, ...).
    error : type
        The :class:`~brainmaps.exceptions.BrainmapsError` subclass to raise.
    header : bool
        The first line names the columns (otherwise columns are numbered 0, 1, ...).
    comments : bool
        Skip lines starting with ``#``.
    na_values : bool
        Read pandas' usual missing-value markers (empty, ``NA``, ``n/a``, ...) as NaN;
        ``False`` keeps every value as written.

    Returns
    -------
    pandas.DataFrame
        Column names stripped of surrounding whitespace; values are ``str`` (or NaN).

    Raises
    ------
    BrainmapsError
        Of type ``error``: the file is missing, not UTF-8 text, empty, has a header but
        no rows ("the table has no rows"), or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise error(f"{what} {path} {state}; give a TSV or CSV file.")
    lines = _lines(path, what, error, comments)
    sep = sniff_separator(lines[0], path.suffix)
    kind = _NAMES.get(sep, "whitespace-separated")
    if header and len(lines) == 1:
        columns = [c.strip() for c in lines[0].split(sep if sep != _WHITESPACE else None)]
        raise error(
            f"{what} {path}: the table has no rows (only the header: "
            f"{', '.join(columns[:8])}); add its rows, or pass the right file."
        )
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(lines)),
            sep=sep,
            dtype=str,
            header=0 if header else None,
            keep_default_na=na_values,
            engine="python" if sep == _WHITESPACE else "c",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())
        raise error(
            f"{what} {path} could not be parsed as a {kind} table ({reason}); give every row "
            "as many fields as the header (quote values that contain the separator)."
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


#: Header names accepted for the label value and the region name of a label table.
INDEX_COLUMNS = ("index", "label", "value")
NAME_COLUMNS = ("name", "region", "label_name", "structure")


def _pick(header: list[str], names: tuple[str, ...], skip: int | None = None) -> int | None:
    for name in names:
        if name in header and header.index(name) != skip:
            return header.index(name)
    return None


def read_label_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read an atlas's region table: a TSV/CSV with index and name columns, or a LUT.

    Parameters
    ----------
    path : str or os.PathLike
        A table whose header names an index column (:data:`INDEX_COLUMNS`) and a name
        column (:data:`NAME_COLUMNS`), any case, optionally ``hemisphere``; or a
        FreeSurfer lookup table (``index name r g b a`` per line, ``#`` comments).

    Returns
    -------
    pandas.DataFrame
        Checked by :func:`check_label_table`: ``index`` (int64, > 0, sorted), ``name``
        and, when the table has one, ``hemisphere`` as written.

    Raises
    ------
    ConfigError
        If the file is missing, empty, has no index and name columns or no rows, or an
        index is not an integer or appears twice.
    """
    path = Path(path)
    rows = read_table(
        path, what="labels: region table", error=ConfigError, header=False, comments=True,
        na_values=False,
    )  # fmt: skip
    rows = rows.fillna("").astype(str).apply(lambda c: c.str.strip())
    header = [h.lower() for h in rows.iloc[0]]
    j = _pick(header, NAME_COLUMNS)
    i = _pick(header, INDEX_COLUMNS, skip=j)
    if i is not None and j is not None:
        if len(rows) == 1:
            raise ConfigError(
                f"labels: region table {path}: the table has no rows (only the header); add "
                "one row per region."
            )
        body = rows.iloc[1:]
        table = pd.DataFrame({"index": body.iloc[:, i], "name": body.iloc[:, j]})
        if "hemisphere" in header:
            table["hemisphere"] = body.iloc[:, header.index("hemisphere")]
    elif re.fullmatch(r"-?\d+", rows.iat[0, 0]) and rows.shape[1] >= 2:
        table = pd.DataFrame({"index": rows.iloc[:, 0], "name": rows.iloc[:, 1]})
    else:
        raise ConfigError(
            f"labels: {path} has no 'index' and 'name' columns (an index column: "
            f"{'/'.join(INDEX_COLUMNS)} and a name column: {'/'.join(NAME_COLUMNS)}; first "
            f"line: {[h for h in rows.iloc[0] if h][:6]}); give a TSV/CSV whose header has "
            "them, or a FreeSurfer lookup table with lines 'index name r g b a'."
        )
    return check_label_table(table.reset_index(drop=True), str(path))


def check_label_table(table: pd.DataFrame, source: str = "labels") -> pd.DataFrame:
    """Check a region table's ``index`` and ``name`` columns; drop background rows.

    Parameters
    ----------
    table : pandas.DataFrame
        ``index`` and ``name`` columns (and optionally ``hemisphere``, kept as is).
    source : str
        The file (or ``"labels"``) for messages.

    Returns
    -------
    pandas.DataFrame
        ``index`` (int64), ``name`` (str) [, ``hemisphere``]; rows with index <= 0
        (background) dropped; sorted by index.

    Raises
    ------
    ConfigError
        If an index is not an integer or appears twice.
    """
    index = pd.to_numeric(table["index"], errors="coerce")
    bad = table.loc[index.isna() | (index != np.round(index)), "index"]
    if len(bad):
        raise ConfigError(
            f"labels: {source} has non-integer indices {list(bad)[:5]}; every row needs an "
            "integer label value and a name."
        )
    out = pd.DataFrame({"index": index.astype(np.int64), "name": table["name"].astype(str)})
    dup = out.loc[out["index"].duplicated(), "index"]
    if len(dup):
        raise ConfigError(
            f"labels: {source} lists indices {sorted(set(dup))[:5]} more than once; give "
            "each label value one name."
        )
    if "hemisphere" in table.columns:
        out["hemisphere"] = table["hemisphere"].to_numpy()
    out = out[out["index"] > 0]
    return out.sort_values("index").reset_index(drop=True)
