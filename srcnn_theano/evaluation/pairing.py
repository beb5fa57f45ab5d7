"""Pairing files by name: each ground-truth (HR) image with a method's result or an LR image.

The rules (``score``, ``evaluate --lr``, ``benchmark --method``):

1. The file whose stem (name without extension) equals the HR file's stem:
   ``baby_GT.bmp`` with ``baby_GT.png``.
2. Else, with a trailing ``_HR`` or ``_GT`` removed from the HR stem, the
   unique file whose stem begins with what is left: ``img_001_SRF_3_HR.png``
   with ``img_001_SRF_3_A+.png``, ``baby_GT.bmp`` with ``baby.png``,
   ``0801.png`` with ``0801x3.png``. When several begin with it, the one
   where the name continues with a non-alphanumeric character (or ends) is
   taken if it is the only such one (``img_1`` takes ``img_1_x.png`` over
   ``img_10_x.png``); otherwise the HR image is ambiguous.

A missing or ambiguous match, or one file matched by two HR images, is a
:class:`~srcnn_theano.errors.SRCNNError` naming the files.
"""
import os
import re

from srcnn_theano.errors import SRCNNError

HR_SUFFIXES = ("_HR", "_GT")


def stem(path):
    """File name without folder and extension: ``'a/baby_GT.bmp'`` -> ``'baby_GT'``."""
    return os.path.splitext(os.path.basename(path))[0]


def base_stem(hr_path):
    """The HR stem without a trailing ``_HR`` / ``_GT`` (rule 2's prefix)."""
    s = stem(hr_path)
    for suffix in HR_SUFFIXES:
        if s.endswith(suffix) and len(s) > len(suffix):
            return s[: -len(suffix)]
    return s


def match(hr_path, candidates, what="SR", where=None):
    """The file of ``candidates`` that pairs with ``hr_path`` (see the module docstring).

    Parameters
    ----------
    hr_path : str
    candidates : list of str
        File paths (e.g. :func:`srcnn_theano.image.io.list_images` of a folder).
    what : str
        What the candidates are, for messages (``'SR'``, ``'LR'``).
    where : str or None
        Their folder, for messages.

    Returns
    -------
    str, one of ``candidates``.

    Raises
    ------
    SRCNNError
        No match, or an ambiguous one.
    """
    name = os.path.basename(hr_path)
    place = f" in {where}" if where else ""
    exact = [c for c in candidates if stem(c) == stem(hr_path)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise SRCNNError(f"ambiguous {what} image for {name}{place}: "
                         + ", ".join(sorted(os.path.basename(c) for c in exact)))
    prefix = base_stem(hr_path)
    found = [c for c in candidates if stem(c).startswith(prefix)]
    if len(found) > 1:
        bounded = [c for c in found if re.match(r"$|[^0-9A-Za-z]", stem(c)[len(prefix):])]
        if len(bounded) == 1:
            found = bounded
    if not found:
        raise SRCNNError(f"no {what} image for {name}{place} (no file named {stem(hr_path)}.* "
                         f"or beginning with {prefix!r})")
    if len(found) > 1:
        raise SRCNNError(f"ambiguous {what} image for {name}{place}: "
                         + ", ".join(sorted(os.path.basename(c) for c in found)))
    return found[0]


def pair(hr_paths, candidates, what="SR", where=None):
    """:func:`match` for every HR image; each candidate may be used only once.

    Returns
    -------
    list of str
        The matching candidate of each HR path, in the order of ``hr_paths``.
    """
    out, used = [], {}
    for hr in hr_paths:
        got = match(hr, candidates, what, where)
        if got in used:
            raise SRCNNError(f"{what} image {got} matches two ground-truth images: "
                             f"{os.path.basename(used[got])} and {os.path.basename(hr)}")
        used[got] = hr
        out.append(got)
    return out
