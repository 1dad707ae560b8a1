#!/usr/bin/env bash
# Install the MedEdge edge server as a systemd service (as root, on Debian/Ubuntu with Python >= 3.11):
#
#   sudo packaging/edge/install.sh [--repository DIR] [-- EXPORT_OPTIONS...]
#
# Copies this checkout to /opt/mededge, creates its venv (`pip install -c constraints.txt -e '.[edge]'`),
# creates the unprivileged user `mededge`, puts the Triton repository in /var/lib/mededge/repository — a copy of
# DIR (an earlier `main.py edge export --out DIR`), or a fresh export (demo weights unless EXPORT_OPTIONS name
# weight files, e.g. -- --detector-weights /root/p5.pt --cuts all) — installs mededge-edge.service and starts it.
# Run it again to upgrade: the code and venv are refreshed, the repository re-exported (or re-copied).
set -euo pipefail

PREFIX=/opt/mededge
STATE=/var/lib/mededge
CONFIG=/etc/mededge
UNIT=mededge-edge.service
SOURCE=$(cd "$(dirname "$0")/../.." && pwd)

repository=""
while [ $# -gt 0 ]; do
    case "$1" in
        --repository) repository=$(realpath -e "${2:?--repository needs a folder}"); shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done
export_options=("$@")   # passed to `main.py edge export` as separate arguments, never through a shell

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
command -v systemctl >/dev/null || { echo "install.sh: systemd is required" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "install.sh: Python >= 3.11 is required" >&2; exit 1; }
# Triton's Python-backend stub loads the interpreter's shared libpython (Debian: package libpython3.X).
python3 -c 'import os, sys, sysconfig as s; sys.exit(not os.path.exists(os.path.join(s.get_config_var("LIBDIR"),
    s.get_config_var("INSTSONAME"))))' || { echo "install.sh: python3 has no shared libpython: apt-get install" \
    "libpython$(python3 -c 'import sys; print(*sys.version_info[:2], sep=".")')" >&2; exit 1; }
if [ -n "$repository" ] && ! compgen -G "$repository/*/config.pbtxt" >/dev/null; then
    echo "install.sh: $repository holds no Triton models (*/config.pbtxt)" >&2; exit 1
fi

getent group mededge >/dev/null || groupadd --system mededge
id -u mededge >/dev/null 2>&1 || useradd --system --gid mededge --home-dir "$STATE" --no-create-home \
    --shell /usr/sbin/nologin --comment "MedEdge edge server" mededge

echo "installing the code into $PREFIX"
systemctl stop "$UNIT" 2>/dev/null || true
mkdir -p "$PREFIX"
find "$PREFIX" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude='__pycache__' --exclude=./.pytest_cache --exclude=./.import_linter_cache -cf - . | tar -C "$PREFIX" --no-same-owner -xf -
if [ ! -x "$PREFIX/.venv/bin/pip" ]; then
    rm -rf "$PREFIX/.venv"
    python3 -m venv "$PREFIX/.venv" || { rm -rf "$PREFIX/.venv"; echo "install.sh: apt-get install python3-venv" >&2; exit 1; }
fi
"$PREFIX/.venv/bin/python" -m pip install --quiet --upgrade pip
(cd "$PREFIX" && .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[edge]')
chmod -R go-w "$PREFIX"   # root owns the code; the service can read it, not change it

install -d -o mededge -g mededge -m 0750 "$STATE"
rm -rf "$STATE/repository.new"
if [ -n "$repository" ]; then
    echo "copying the repository $repository"
    cp -r "$repository" "$STATE/repository.new"
else
    echo "exporting the edge parts (a few minutes on a CPU)"
    (cd "$PREFIX" && MEDEDGE_DATA_DIR="$STATE" .venv/bin/python main.py edge export --out "$STATE/repository.new" \
        "${export_options[@]}")
fi
rm -rf "$STATE/repository" && mv "$STATE/repository.new" "$STATE/repository"
chown -R mededge:mededge "$STATE"
chmod -R u=rwX,g=rX,o= "$STATE/repository"   # the service refuses a repository others could change

# TLS for gRPC (the unit serves it on every interface and refuses plaintext there). Kept when present; else a site
# CA and a server certificate it signed, for this host's names and addresses. The workstations trust ca.pem.
TLS="$CONFIG/tls"
install -d -m 0755 "$CONFIG" && install -d -m 0750 -g mededge "$TLS"
if [ ! -e "$TLS/server.pem" ] || [ ! -e "$TLS/server.key" ]; then
    echo "making a site CA and a TLS certificate for this edge in $TLS"
    names="DNS:localhost,IP:127.0.0.1,DNS:$(hostname)"
    fqdn=$(hostname -f 2>/dev/null || true)
    [ -n "$fqdn" ] && [ "$fqdn" != "$(hostname)" ] && names="$names,DNS:$fqdn"
    for address in $(hostname -I 2>/dev/null || true); do names="$names,IP:$address"; done
    scratch=$(mktemp -d)
    (umask 077
     openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=MedEdge site CA ($(hostname))" \
         -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
     openssl req -newkey rsa:3072 -nodes -subj "/CN=$(hostname)" -keyout "$TLS/server.key" \
         -out "$scratch/server.csr" 2>/dev/null
     printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$names" > "$scratch/san.ext"
     openssl x509 -req -in "$scratch/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
         -days 825 -extfile "$scratch/san.ext" -out "$TLS/server.pem" 2>/dev/null)
    rm -rf "$scratch"
    chmod 0644 "$TLS/ca.pem" "$TLS/server.pem"
    chgrp mededge "$TLS/server.key" && chmod 0640 "$TLS/server.key"   # ca.key stays root's (0600)
    echo "workstations: Settings → Edge → Use TLS, CA certificate = a copy of $TLS/ca.pem (names: $names)"
fi

[ -e "$CONFIG/edge.env" ] || cat > "$CONFIG/edge.env" <<'EOF'
# Options appended to `main.py edge serve` by mededge-edge.service (see `main.py edge serve --help`).
# gRPC is served over TLS with /etc/mededge/tls/server.pem and server.key (key readable by group mededge).
# Mutual TLS (workstations need a certificate this CA signed): --tls-client-ca /etc/mededge/tls/workstations-ca.pem
# One interface only: --host 10.0.0.5 . Plaintext gRPC (not recommended; warned on every start): --insecure
#MEDEDGE_EDGE_OPTS=--tls-client-ca /etc/mededge/tls/workstations-ca.pem
EOF
install -m 0644 "$PREFIX/packaging/edge/$UNIT" "/etc/systemd/system/$UNIT"
# the DICOM node beside it: installed, not enabled (it needs its senders and the PACS in /etc/mededge/listen.env)
install -m 0644 "$PREFIX/packaging/edge/mededge-listen.service" /etc/systemd/system/mededge-listen.service
systemctl daemon-reload
systemctl enable --now "$UNIT"
echo "started $UNIT — check: systemctl status $UNIT, and (ready, version, parts) as the operator:"
echo "  sudo -u mededge env MEDEDGE_DATA_DIR=$STATE $PREFIX/.venv/bin/python $PREFIX/main.py edge control status"
