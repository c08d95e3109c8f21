#!/usr/bin/env bash
# Build dist/clinvk.pyz: a compressed zipapp of our own modules (and the web console's
# scripts and style sheet, clinvk_lib/server/console/*.js and *.css) only, with a
# `#!/usr/bin/env python3` line. The same sources give the same bytes (fixed file times,
# sorted entries, fixed permissions), so a copy can be checked by its hash:
#   sha256sum dist/clinvk.pyz
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
mkdir -p dist
"$PYTHON" - <<'PY'
import io, os, pathlib, zipapp, zipfile

FIXED_TIME = (1980, 1, 1, 0, 0, 0)   # the earliest time a zip entry can hold
files = [("__main__.py", pathlib.Path("clinvk.py"))]
files += sorted((p.as_posix(), p) for p in pathlib.Path("clinvk_lib").rglob("*.py")
                if "__pycache__" not in p.parts)
files += sorted((p.as_posix(), p) for p in pathlib.Path("clinvk_lib/server/console").iterdir()
                if p.suffix in (".js", ".css"))
files.sort(key=lambda f: (f[0] != "__main__.py", f[0]))
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    for name, path in files:
        info = zipfile.ZipInfo(name, FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        z.writestr(info, path.read_bytes(), compresslevel=9)
buf.seek(0)
# Written beside the target and renamed over it: a clinvk.pyz being run or copied meanwhile
# (or a second build) never sees a half-written archive.
tmp = pathlib.Path("dist/.clinvk.pyz.%d" % os.getpid())
try:
    zipapp.create_archive(buf, str(tmp), interpreter="/usr/bin/env python3")
    tmp.chmod(0o755)
    os.replace(str(tmp), "dist/clinvk.pyz")
finally:
    if tmp.exists():
        tmp.unlink()
PY
echo "built dist/clinvk.pyz ($(wc -c < dist/clinvk.pyz) bytes, sha256 $(sha256sum dist/clinvk.pyz | cut -c1-16)...)"
