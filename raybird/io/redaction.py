"""Keeping credentials out of errors and logs: every error row's source and reason, and the
messages quoted in them, go through :func:`redact`."""

from __future__ import annotations

import errno
import os
import re

SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID")
_SECRET_PATTERNS = (
    (re.compile(r"(?<=://)[^\s/@'\"]+@"), "***@"),  # user:password@ in URLs
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),  # AWS access key ids
    (
        re.compile(r"(?i)\b((?:x-amz-)?(?:signature|credential|security-token|awsaccesskeyid)=)[^&\s'\"]+"),
        r"\1***",
    ),  # presigned URLs
)


def redact(text: str) -> str:
    """``text`` without credentials: the values of the AWS credential variables of this
    process (8 characters or more: shorter ones are placeholders, not secrets), access key ids,
    ``user:password@`` in URLs and the signature parts of presigned URLs. Applied to every
    error row, since reasons quote paths, URLs and library messages."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 8:
            text = text.replace(value, "***")
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def describe(e: BaseException) -> str:
    """The errors-table reason for a failed read: specific for the usual cases, redacted."""
    if isinstance(e, FileNotFoundError):
        reason = "not found (deleted or moved after it was listed?)"
    elif isinstance(e, PermissionError):
        reason = "permission denied"
    elif isinstance(e, OSError) and e.errno == errno.ELOOP:
        reason = "symbolic link loop"
    else:
        reason = f"{type(e).__name__}: {e}"
    return redact(reason)
