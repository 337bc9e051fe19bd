"""Passwords out of storage URLs, before they reach a log, an MLflow tag, a report or a message."""
import re

# Every place a driver takes a secret from: `user:password@` in a URL, and key=value pairs in a
# query string (`?password=`, pymysql's `passwd=`) or in a libpq connection string.
_USERINFO = re.compile(r"(://[^/:@?#\s]*:)[^/?#\s]*@")  # greedy: a raw @ in the password
_SECRET_PAIR = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|pwd|secret|token)[\w.-]*\s*=\s*)('[^']*'|[^&;\s'\"]+)")


def mask_url(text: str) -> str:
    """A URL (or a message quoting one) with every password replaced by ***, for logs, tags and
    messages. SQLAlchemy's own `render_as_string(hide_password=True)` masks only the first form."""
    return _SECRET_PAIR.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
