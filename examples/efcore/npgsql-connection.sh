#!/bin/sh
# Prints $DATABASE_URL (postgres://user:password@host:port/database?sslmode=require) as the
# key=value connection string Npgsql reads. Percent-encoded characters in the user name
# or password are decoded.
set -eu
python3 - <<'PY'
import os
from urllib.parse import unquote, urlsplit, parse_qsl

url = urlsplit(os.environ["DATABASE_URL"])
parts = {
    "Host": url.hostname or "localhost",
    "Port": str(url.port or 5432),
    "Database": unquote(url.path.lstrip("/")),
    "Username": unquote(url.username or ""),
    "Password": unquote(url.password or ""),
}
names = {"sslmode": "SSL Mode"}
for key, value in parse_qsl(url.query):
    if key in names:
        parts[names[key]] = {"disable": "Disable", "require": "Require", "prefer": "Prefer",
                             "allow": "Allow", "verify-ca": "VerifyCA",
                             "verify-full": "VerifyFull"}.get(value, value)
def quote(value):
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ';="\'') else value
print(";".join(f"{k}={quote(v)}" for k, v in parts.items() if v))
PY
