"""Links that reproduce a view: the workspace and the page's settings live in the URL (``st.query_params``).

A teacher copies the address bar and a student who opens it sees the same encoder, dataset, embedding and
page settings. :data:`LINKABLE` is the one table of what a link carries: per page, the ``st.session_state``
keys of its settings widgets and how each is written in the URL (:class:`Param`). Buttons, uploads, data
editors and forms are never in it (setting those through ``st.session_state`` raises).

* :func:`restore_from_url` (``app.py``, before the sidebar): once per browser session, the query parameters
  in the table go into ``st.session_state``, parsed to their type; a value that does not parse, lies outside
  a slider's fixed range, or names an encoder or dataset this server does not offer is left out (the
  workspace ones with one warning sentence each).
* :func:`run_page` (``app.py``, instead of ``page.run()``): :func:`sync_to_url` before the page runs (the
  values it is about to use: a page that calls ``st.stop()`` still leaves a correct URL) and after it (the
  defaults of widgets drawn for the first time); a widget that refuses a restored value is answered by
  dropping the link's values and running again, with a warning.

Streamlit 1.67, checked by ``tests/test_links.py``: a selectbox, radio, select_slider or number_input given a
value it cannot show falls back to its default, and a multiselect drops the items it does not offer; only a
slider raises (value out of its range). So the table carries the fixed ranges of sliders, and a page whose
slider range depends on the data calls :func:`range_or_default` before drawing it.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from ssl_viz.augment.knobs import AUGMENT_KNOBS
from ssl_viz.data import DATASETS, DatasetError
from ssl_viz.encoders import ENCODERS
from ssl_viz.paths import uploads_dir
from ssl_viz.safety import UnsafeInputError, data_roots, is_uploaded_dataset, resolve_user_path
from ssl_viz.ui.loaders import get_dataset
from ssl_viz.ui.workspace import available_models, default_dataset, default_model

MAX_TEXT = 1000            # characters of one URL value; longer values are not restored
RESTORED = "_links_restored"     # session flag: the URL was read once in this browser session
PENDING = "_links_pending"       # {key: value} restored from the URL and not yet shown by a complete page run
NOTICES = "_links_notices"       # warnings to show on the next run (after a rerun)


@dataclass(frozen=True)
class Param:
    """How one linkable ``st.session_state`` key is written in the URL and read back.

    ``type`` is ``str``, ``int``, ``float`` or ``bool``; ``lo`` / ``hi`` the fixed range of a slider (a value
    outside is not restored); ``many`` a multiselect (one URL value per item).
    """

    type: type = str
    lo: float | None = None
    hi: float | None = None
    many: bool = False


STR, INT, FLOAT, BOOL = Param(str), Param(int), Param(float), Param(bool)
WORKSPACE = "workspace"
HOME = "home"

# page (its script's name in pages/, as its URL path) -> {session_state key or fnmatch pattern: Param}. A slider's
# fixed range is the one its page draws (tests/test_links.py compares them); sliders whose range depends on the data
# (fm_index, neg_anchor) are guarded by their page (range_or_default).
LINKABLE: dict[str, dict[str, Param]] = {
    WORKSPACE: {"ws_model": STR, "ws_encoder": STR, "ws_dataset": STR, "ws_label": STR, "ws_representation": STR},
    HOME: {},
    "pairs": {"pairs_policy": STR, "pairs_n": Param(int, 4, 16), "pairs_seed": INT, "pairs_tau": Param(float, 0.05, 1.0),
              "pairs_spec": STR, "pairs_rep": STR, "pairs_anchor": INT},
    "kernels": {"kern_second": STR, "kern_scale": STR, "kern_size": Param(int, 12, 96), "kern_max": Param(int, 8, 256),
                "kern_layer_*": STR, "kern_channel_*": INT},
    "feature_maps": {"fm_source": STR, "fm_index": INT, "fm_layer": STR, "fm_sort": STR, "fm_max": Param(int, 8, 128), "fm_channel": INT},
    "attention": {"att_indices": STR, "att_target": STR, "att_method": STR, "att_second": STR, "att_policy": STR, "att_seed": INT,
                  "att_reference": INT, "att_class": INT, "att_steps": Param(int, 4, 64)},
    "embeddings": {"emb_method": STR, "emb_dims": INT, "emb_n": INT, "emb_color": STR, "emb_k": Param(int, 2, 30),
                   "emb_neighbors": Param(int, 2, 100), "emb_min_dist": Param(float, 0.0, 0.99), "emb_perplexity": Param(float, 2.0, 100.0),
                   "emb_knn": Param(int, 1, 30), "emb_focus": INT, "emb_compare": STR, "emb_view": STR, "emb_thumbs": BOOL},
    "retrieval": {"ret_n": INT, "ret_k": Param(int, 1, 50), "ret_mode": STR, "ret_query": INT},
    "train": {"tr_method": STR, "tr_encoder": STR, "tr_width": INT, "tr_dataset": STR, "tr_label": STR, "tr_batch": INT,
              "tr_tau_*": Param(float, 0.05, 1.0), "tr_budget": STR, "tr_amount_*": FLOAT, "tr_seed": INT, "tr_knn": INT, "tr_knn_s": FLOAT,
              "tr_image_size": INT, "tr_lr_*": FLOAT, "tr_preset": STR, "tr_policy_spec": STR, "tr_watch": STR, "tr_*_on": BOOL,
              **{f"tr_*_{knob}_value": Param(type(lo), lo, hi) for knob, (_, _, lo, hi, _, _) in AUGMENT_KNOBS.items()}},
    "runs": {"runs_compare": Param(str, many=True), "runs_metric": STR, "runs_x": STR, "runs_log": BOOL, "runs_evo_run": STR,
             "runs_evo_proj": STR},
    "diagnose": {"diag_label": STR, "diag_n": INT, "diag_encoder": BOOL, "diag_augs": Param(str, many=True), "diag_strength": FLOAT,
                 "diag_verify_budget": INT, "diag_abl_mode": STR, "diag_abl_budget": INT, "diag_abl_base": STR},
    "negatives": {"neg_batch": Param(int, 8, 128), "neg_k": Param(int, 3, 10), "neg_seed": INT, "neg_anchor": INT,
                  "neg_classes": Param(int, many=True), "neg_sizes": Param(int, many=True), "neg_n": INT, "neg_other": STR},
}


def param_of(key: str, page: str | None = None) -> Param | None:
    """The :class:`Param` of ``key`` in :data:`LINKABLE` (workspace keys, then ``page``'s, or every page's when
    ``page`` is None; exact keys before patterns), or None when a link does not carry ``key``. Raises nothing."""
    tables = [LINKABLE[WORKSPACE]] + ([LINKABLE.get(page, {})] if page is not None else
                                      [t for name, t in LINKABLE.items() if name != WORKSPACE])
    for table in tables:
        if key in table:
            return table[key]
    for table in tables:
        for pattern, param in table.items():
            if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
                return param
    return None


# ----------------------------------------------------------------------------- values <-> URL text


def parse_value(text: str, param: Param):
    """``text`` from the URL as ``param.type`` (bool: ``true`` / ``false`` / ``1`` / ``0``).

    Raises ValueError when it does not parse, is not finite, is longer than :data:`MAX_TEXT` or lies
    outside ``[param.lo, param.hi]``.
    """
    if len(text) > MAX_TEXT:
        raise ValueError("too long")
    if param.type is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"not a boolean: {text!r}")
        return text.lower() in ("true", "1")
    if param.type is str:
        return text
    value = param.type(text.strip())
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not finite: {text!r}")
    if (param.lo is not None and value < param.lo) or (param.hi is not None and value > param.hi):
        raise ValueError(f"{value} outside [{param.lo}, {param.hi}]")
    return value


def format_value(value) -> str | list[str] | None:
    """``value`` (a widget's value) as URL text, a list of texts for a list; None for nothing worth a parameter
    (None, "", []). Floats are written so that :func:`parse_value` gives the same float back. Raises nothing."""
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        return None
    if isinstance(value, (list, tuple)):
        return [t for t in (format_value(v) for v in value) if isinstance(t, str)] or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):   # numpy floats too: repr(np.float64(0.5)) is not "0.5"
        return repr(float(value))
    return str(value)


# ----------------------------------------------------------------------------- the workspace from a URL


def _quote(text: str, limit: int = 80) -> str:
    """``text`` shortened and with every markdown character escaped (a link cannot draw links or images)."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return re.sub(r"([\\`*_{}\[\]()<>#!|~$:])", r"\\\1", text)


def _real(path: str) -> Path | None:
    try:
        return Path(os.path.realpath(path))
    except (ValueError, OSError):   # a NUL byte, a loop of links
        return None


def accepted_model(value: str) -> str | None:
    """``value`` if it names a model this server offers: one of :func:`available_models`, the default model, or a
    checkpoint uploaded to this server (a file under ``uploads_dir()/checkpoints``, returned as its real path); else
    None. ``value`` is a path from a URL: anything (``..``, links, NUL bytes) is answered, nothing raises."""
    if value in {str(p) for _, p, _ in available_models()} or value == default_model():
        return value
    real, root = _real(value), _real(str(uploads_dir() / "checkpoints"))
    if real is not None and root is not None and real.is_relative_to(root) and real.is_file():
        return str(real)
    return None


def accepted_dataset(value: str) -> str | None:
    """``value`` if it names a dataset this server offers: a registry name (not the bare ``folder``), or
    ``folder:PATH`` with PATH under the data roots (:func:`~ssl_viz.safety.resolve_user_path`) or an uploaded
    zip's folder; else None. A folder comes back as ``folder:`` and its real path. ``value`` comes from a URL:
    anything is answered, nothing raises."""
    if value in DATASETS and value != "folder":
        return value
    if not value.startswith("folder:") or not value[7:]:
        return None
    path = value[7:]
    real = _real(path)
    if real is not None and real.is_dir() and is_uploaded_dataset(real):
        return f"folder:{real}"
    try:
        return f"folder:{resolve_user_path(path, data_roots())}"
    except (UnsafeInputError, ValueError, OSError):
        return None


def _restore_workspace(params: dict[str, str], warn: list[str]) -> None:
    state = st.session_state
    if "ws_model" in params:
        model = accepted_model(params["ws_model"])
        if model is None:
            showing = state.get("ws_model") or default_model()
            warn.append(f"The link's encoder {_quote(Path(params['ws_model']).name)} is not available here; "
                        f"showing {_quote(Path(showing).name) or 'none'}.")
        else:
            state["ws_model"] = model
            state["ws_encoder"] = params.get("ws_encoder") if params.get("ws_encoder") in ENCODERS else None
    if "ws_dataset" in params:
        dataset = accepted_dataset(params["ws_dataset"])
        if dataset is None:
            showing = state.get("ws_dataset") or default_dataset()
            warn.append(f"The link's dataset {_quote(params['ws_dataset'])} is not available here; showing {_quote(showing)}.")
        else:
            if dataset != state.get("ws_dataset"):
                state["ws_label"] = None
            state["ws_dataset"] = dataset
    if params.get("ws_label"):
        dataset = state.get("ws_dataset") or default_dataset()
        try:
            factors = get_dataset(dataset, "test").factors
        except (DatasetError, OSError, ValueError):
            factors = {}
        if params["ws_label"] in factors:
            state["ws_label"] = params["ws_label"]
        else:
            warn.append(f"The link's label {_quote(params['ws_label'])} is not a factor of {_quote(dataset)}; "
                        "showing its default labels.")
    rep = params.get("ws_representation", "")
    if rep in ("backbone", "projector") or (rep.startswith("stage:") and len(rep) <= 100):
        state["ws_representation"] = rep   # the sidebar keeps it only if the model has it


def restore_from_url() -> None:
    """Copy the linkable query parameters into ``st.session_state``, once per browser session.

    Every key of :data:`LINKABLE` (any page's) present in ``st.query_params`` is parsed to its type
    (:func:`parse_value`) and stored; values that do not parse are ignored. ``ws_model`` and
    ``ws_dataset`` are accepted only when this server offers them (:func:`accepted_model`,
    :func:`accepted_dataset`); each rejected workspace value gives one ``st.warning`` sentence and the
    current or default choice stays. Later calls in the session only show warnings left by
    :func:`run_page`. Raises nothing for any URL.
    """
    state = st.session_state
    for notice in state.pop(NOTICES, []):
        st.warning(notice)
    if state.get(RESTORED):
        return
    state[RESTORED] = True
    query = st.query_params
    warn: list[str] = []
    workspace = {k: query[k] for k in LINKABLE[WORKSPACE] if k in query and query[k]}
    _restore_workspace(workspace, warn)
    pending = {}
    for key in query:
        param = param_of(key)
        if param is None or key in LINKABLE[WORKSPACE]:
            continue
        texts = query.get_all(key)
        if not texts or "" in texts:
            continue
        try:
            value = [parse_value(t, param) for t in texts] if param.many else parse_value(texts[-1], param)
        except (ValueError, TypeError):
            continue
        state[key] = pending[key] = value
    state[PENDING] = pending
    for sentence in warn:
        st.warning(sentence)


# ----------------------------------------------------------------------------- the URL from the session


def sync_to_url(page: str | None = None) -> None:
    """Write the linkable values now in ``st.session_state`` into ``st.query_params``.

    Args:
        page: the running page's name (its script's name in ``pages/``); its keys and the workspace keys
            are written, linkable keys of every other page are removed from the URL.

    Values that are None, "" or empty lists are left out; query parameters not in :data:`LINKABLE` are
    kept. Nothing is sent when nothing changed, else one message (each is one browser history entry). A
    parameter bound to a widget (``bind="query-params"``) is Streamlit's to write and is skipped. Raises nothing.
    """
    state = st.session_state
    wanted: dict[str, list[str]] = {}
    for key in list(state.keys()):
        if isinstance(key, str) and not key.startswith("_") and param_of(key, page) is not None:
            text = format_value(state[key])
            if text is not None:
                wanted[key] = text if isinstance(text, list) else [text]
    order = list(LINKABLE[WORKSPACE])   # a stable, readable URL: the workspace first, then the page's keys by name
    wanted = dict(sorted(wanted.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
    query = st.query_params
    current = {key: query.get_all(key) for key in query}
    kept = {key: values for key, values in current.items() if param_of(key) is None}   # not ours: left as they are
    if {**kept, **wanted} == current:
        return
    try:   # one message: the browser gets one history entry per change, not one per parameter
        query.from_dict({key: values if len(values) > 1 else values[0] for key, values in {**kept, **wanted}.items()})
    except StreamlitAPIException:   # a parameter bound to a widget: write the others one by one
        for key in current:
            if key not in wanted and key not in kept:
                try:
                    del query[key]
                except (StreamlitAPIException, KeyError):
                    pass
        for key, values in wanted.items():
            if current.get(key) != values:
                try:
                    query[key] = values if len(values) > 1 else values[0]
                except StreamlitAPIException:
                    pass


def range_or_default(key: str, lo: float, hi: float) -> float:
    """Drop ``st.session_state[key]`` when it lies outside ``[lo, hi]`` (or is no number), so the slider about
    to be drawn with that range shows its default instead of raising. Call it before ``st.slider(..., key=key)``
    when the range depends on the data (a link made for a larger dataset), or inline as its ``max_value``:
    it returns ``hi``. Raises nothing."""
    value = st.session_state.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi):
        del st.session_state[key]
    return hi


def run_page(page) -> None:
    """Run ``page`` (what ``st.navigation`` returned) with the URL kept in step with what it shows.

    :func:`sync_to_url` runs before the page (the values its widgets are about to return: a page that
    calls ``st.stop()`` still leaves a correct URL) and after it (the defaults of widgets drawn for the
    first time). When a widget refuses a value restored from the link (StreamlitAPIException, e.g. a
    slider's range that depends on the data), the restored values still unchanged are dropped, a warning
    is kept for the next run and the app reruns; any other exception, or one with no restored value left
    to drop, propagates.
    """
    name = page.url_path or HOME
    sync_to_url(name)
    try:
        page.run()
    except StreamlitAPIException:
        state = st.session_state
        dropped = [k for k, v in state.get(PENDING, {}).items() if k in state and state[k] == v]
        if not dropped:
            raise
        for key in dropped:
            del state[key]
        state[PENDING] = {}
        state.setdefault(NOTICES, []).append(f"This page cannot show the link's settings ({_quote(', '.join(dropped))}); "
                                             "showing its defaults.")
        st.rerun()
    st.session_state[PENDING] = {}
    sync_to_url(name)
