#!/usr/bin/env bash
# Install or upgrade wg-fleet as a systemd service (as root):
#   sudo contrib/install.sh
# Puts the application in $PREFIX (default /opt/wg-fleet) with its own venv, the config in
# $CONFIG (default /etc/wg-fleet.yaml, copied from example-config.yaml only if absent),
# the unit in $UNIT_DIR (default /etc/systemd/system), then enables and (re)starts it.
# Running it again upgrades in place: new code and requirements, same config and
# database, and a restart that leaves every tunnel up.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/opt/wg-fleet}
CONFIG=${CONFIG:-/etc/wg-fleet.yaml}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}

if [[ $EUID -ne 0 ]]; then
  echo "install.sh: run it as root (it installs packages and a systemd unit)." >&2
  exit 1
fi

packages=(wireguard-tools wireguard-go iproute2)
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

# The application: the service's files only (no tests, no benchmarks). Modules of an
# older release are removed first, so none lingers after an upgrade.
mkdir -p "$PREFIX"
rm -rf "$PREFIX"/*.py "$PREFIX/templates" "$PREFIX/static"
cp -a ./*.py requirements.txt example-config.yaml README.md templates static "$PREFIX/"

[[ -x "$PREFIX/.venv/bin/python" ]] || "$PYTHON" -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$PREFIX/requirements.txt"

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
