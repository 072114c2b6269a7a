"""Who may use this server and what its clients see: the optional password, and serving beyond loopback.

* ``SSL_VIZ_PASSWORD`` (optional): when set, :func:`require_password` (called by ``app.py`` before the
  navigation) shows a password form in front of every page and stops the script until the right password
  is given; the answer is compared in constant time (``hmac.compare_digest``) and remembered for the
  browser session (``st.session_state``).
* :func:`serve_flags` (used by :mod:`ssl_viz.ui.serve`, i.e. ``make run``) looks at the address the server
  will listen on. Beyond loopback it hides tracebacks from clients (``client.showErrorDetails = none``; the
  server still logs them) and warns in the server log when no password is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

PASSWORD_ENV = "SSL_VIZ_PASSWORD"
SESSION_KEY = "_ssl_viz_unlocked"
ADDRESS_FLAG = "--server.address"
ERROR_DETAILS_FLAG = "--client.showErrorDetails"


def expected_password() -> str:
    """The password of this server (``$SSL_VIZ_PASSWORD``), or "" when none is set."""
    return os.environ.get(PASSWORD_ENV, "")


def password_matches(given: str, expected: str) -> bool:
    """Whether ``given`` equals ``expected``, in time that does not depend on where they first differ."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_locked() -> bool:
    """Whether this browser session must still give the password (one is set and was not given yet)."""
    import streamlit as st

    return bool(expected_password()) and not st.session_state.get(SESSION_KEY)


def require_password() -> None:
    """With ``$SSL_VIZ_PASSWORD`` set: a password form, and ``st.stop()`` until the right one was given in this
    browser session. Without it: nothing."""
    import streamlit as st

    if not is_locked():
        return
    expected = expected_password()
    st.title("ssl-viz")
    with st.form("ssl_viz_password"):
        given = st.text_input("Password", type="password", key="ssl_viz_password_input")
        submitted = st.form_submit_button("Enter")
    if submitted:
        if password_matches(given, expected):
            st.session_state[SESSION_KEY] = True
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def confine_dataset_reads() -> None:
    """In this (server) process, a file of a folder dataset named under the data roots or the uploads folder is read
    only if what is opened lies under them too (:func:`ssl_viz.safety.confine_reads`)."""
    from ssl_viz.paths import uploads_dir
    from ssl_viz.safety import confine_reads, data_roots

    confine_reads([*data_roots(), uploads_dir() / "datasets"])


# ----------------------------------------------------------------------------- serving


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag value`` or ``--flag=value``; the last one wins), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _config_address(folders: list[Path]) -> str | None:
    """``[server] address`` of the first ``.streamlit/config.toml`` under ``folders`` that sets it."""
    import tomllib

    for folder in folders:
        try:
            with open(folder / ".streamlit" / "config.toml", "rb") as fh:
                address = tomllib.load(fh).get("server", {}).get("address")
        except (OSError, ValueError):
            continue
        if address:
            return str(address)
    return None


def listen_address(argv: list[str], env: dict[str, str] | None = None, folders: list[Path] | None = None) -> str:
    """The address Streamlit will listen on: ``--server.address`` in ``argv``, else ``$STREAMLIT_SERVER_ADDRESS``,
    else ``[server] address`` of ``.streamlit/config.toml`` in ``folders`` (default: the working folder and the
    repository); "" when none sets it (Streamlit then listens on every interface)."""
    env = os.environ if env is None else env
    folders = folders if folders is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
    return _flag_value(argv, ADDRESS_FLAG) or env.get("STREAMLIT_SERVER_ADDRESS") or _config_address(folders) or ""


def is_loopback(address: str) -> bool:
    """Whether ``address`` reaches this machine only (127.0.0.0/8, ::1, localhost); "" (every interface) is not."""
    address = address.strip().strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def serve_flags(argv: list[str], env: dict[str, str] | None = None, folders: list[Path] | None = None) -> tuple[list[str], list[str]]:
    """Extra Streamlit flags and server-log warnings for serving with ``argv``.

    Beyond loopback: ``--client.showErrorDetails=none`` (unless ``argv`` sets it: an explicit choice is kept),
    so clients see a generic error while the server logs the traceback; and a warning when ``$SSL_VIZ_PASSWORD``
    is not set. On loopback: nothing.
    """
    env = os.environ if env is None else env
    address = listen_address(argv, env, folders)
    if is_loopback(address):
        return [], []
    where = address or "every interface"
    flags = [] if _flag_value(argv, ERROR_DETAILS_FLAG) is not None else [f"{ERROR_DETAILS_FLAG}=none"]
    warnings = []
    if not env.get(PASSWORD_ENV):
        warnings.append(f"ssl-viz is served on {where}, beyond this machine, without a password: anyone who can reach it can use "
                        f"it. Set {PASSWORD_ENV} (e.g. {PASSWORD_ENV}=... make run HOST={address or '0.0.0.0'}) or put an "
                        "authenticating proxy in front.")
    return flags, warnings
