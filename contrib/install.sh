#!/usr/bin/env bash
# Install or upgrade wg-fleet as a systemd service (as root):
#   sudo contrib/install.sh
# Installs this checkout with pip into its own venv in $PREFIX (default /opt/wg-fleet):
# what is installed is what pyproject.toml declares (the modules, migrations, templates and
# static files), owned by root and writable by nobody else. The config goes to $CONFIG
# (default /etc/wg-fleet.yaml, copied from example-config.yaml only if absent), the unit to
# $UNIT_DIR (default /etc/systemd/system); then the service is enabled and (re)started.
# Running it again upgrades in place: new code and requirements, same config and
# database, and a restart that leaves every tunnel up.
# Offline (no package index): point pip at a wheelhouse with its own variables,
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels contrib/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

PREFIX=${PREFIX:-/opt/wg-fleet}
CONFIG=${CONFIG:-/etc/wg-fleet.yaml}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}

if [[ $EUID -ne 0 ]]; then
  echo "install.sh: run it as root (it installs packages and a systemd unit)." >&2
  exit 1
fi

# python3-venv: Debian's python3 cannot make a venv without it; procps: the unit's
# ExecReload runs /bin/kill.
packages=(python3 python3-venv wireguard-tools wireguard-go iproute2 procps)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

install -d -m 0755 -o root -g root "$PREFIX"
# Releases before 0.2 copied the modules into $PREFIX itself.
rm -rf "$PREFIX"/*.py "$PREFIX/templates" "$PREFIX/static" "$PREFIX/migrations" \
  "$PREFIX/requirements.txt"
[[ -x "$PREFIX/.venv/bin/python" ]] || "$PYTHON" -m venv "$PREFIX/.venv"
pip=("$PREFIX/.venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -r requirements.txt
# pip builds from a copy: setuptools writes build/ and *.egg-info beside the sources,
# which must not appear, owned by root, in the operator's checkout. Reinstalling removes
# the files of the release installed before, so no old module lingers.
source=$(mktemp -d)
trap 'rm -rf "$source"' EXIT
tar --exclude=./.git --exclude=./.venv -cf - . | tar -xf - -C "$source" --no-same-owner
"${pip[@]}" --no-deps --force-reinstall "$source"
install -m 0644 README.md example-config.yaml "$PREFIX/"
chown -R root:root "$PREFIX"
chmod -R go-w "$PREFIX"

if [[ ! -e "$CONFIG" ]]; then
  install -m 0600 example-config.yaml "$CONFIG"
  echo "install.sh: wrote $CONFIG from the example; edit its fleets before relying on them."
fi

mkdir -p "$UNIT_DIR"
sed -e "s#/opt/wg-fleet#$PREFIX#g" -e "s#/etc/wg-fleet.yaml#$CONFIG#g" \
  contrib/systemd/wg-fleet.service > "$UNIT_DIR/wg-fleet.service"
chmod 0644 "$UNIT_DIR/wg-fleet.service"

if [[ -d /run/systemd/system ]] && [[ -z "${NO_START:-}" ]]; then
  systemctl daemon-reload
  systemctl enable wg-fleet.service
  systemctl restart wg-fleet.service   # tunnels stay up across the restart
  echo "install.sh: wg-fleet is running; see: systemctl status wg-fleet"
else
  echo "install.sh: installed in $PREFIX; systemd is not running here, so nothing was started."
fi
