#!/usr/bin/env bash
# Install mo-spool on a Debian/Ubuntu VM, as root: `sudo deploy/install.sh` from a checkout.
# Idempotent: run it again after `git pull` to upgrade. It never overwrites /etc/mo-spool/config.ini (built
# once from deploy/config.ini, never from the checkout's config.ini) nor an nginx file the operator edited.
# `deploy/install.sh --dry-run` prints every step without running anything.
#
# A VM sharing its index with others (docs/two-vms.md):
#   deploy/install.sh --index-url postgresql://mospool@db.internal/mospool?sslmode=verify-full \
#                     --index-password-file /root/mospool-db-password [--node vm-a]
# sets [index] url, password_file and [spool] node (default: the short host name) in config.ini, and copies
# the password to /etc/mo-spool/index-password (root:mospool, 0640, in a folder only root and mospool enter).
# The password is never on a command line, in config.ini or in this script's output.
set -euo pipefail

usage() {
    echo "usage: install.sh [--dry-run] [--index-url URL [--index-password-file FILE]] [--node NAME]" >&2
    exit 2
}
DRY_RUN=0
INDEX_URL=""
PASSWORD_FILE=""
NODE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --index-url) [ $# -ge 2 ] || usage; INDEX_URL=$2; shift ;;
        --index-password-file) [ $# -ge 2 ] || usage; PASSWORD_FILE=$2; shift ;;
        --node) [ $# -ge 2 ] || usage; NODE=$2; shift ;;
        *) usage ;;
    esac
    shift
done
if [ -n "$PASSWORD_FILE" ] && [ -z "$INDEX_URL" ]; then
    echo "install.sh: --index-password-file goes with --index-url" >&2
    exit 2
fi
case "$INDEX_URL" in
    ""|postgresql://*|postgres://*) ;;
    *) echo "install.sh: --index-url must be a postgresql:// URL" >&2; exit 2 ;;
esac
case "$INDEX_URL" in
    *://*:*@*|*password=*)
        echo "install.sh: the URL must not hold the password: give it in --index-password-file" >&2
        exit 2 ;;
esac
if [ -n "$PASSWORD_FILE" ] && [ ! -r "$PASSWORD_FILE" ]; then
    echo "install.sh: cannot read $PASSWORD_FILE" >&2
    exit 2
fi

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/mo-spool
APP=$PREFIX/app
VENV=$PREFIX/venv
SHIPPED=$PREFIX/shipped
ETC=/etc/mo-spool
SPOOL=/var/lib/mo-spool/spool
UNITS=(mo-spool-receiver.service mo-spool-worker.service mo-spool-purge.service mo-spool-purge.timer)

run() {
    echo "+ $*"
    [ "$DRY_RUN" = 1 ] || "$@"
}

# Install $1 as $2 unless the operator edited $2. A copy of what was installed is kept in $SHIPPED: a file
# still equal to it (or to the new version) is replaced, an edited one is kept and the new one named.
install_unless_edited() {
    local source=$1 target=$2 shipped
    shipped=$SHIPPED/$(basename "$2")
    if [ -e "$target" ] && ! cmp -s "$target" "$shipped" && ! cmp -s "$target" "$source"; then
        echo "# $target was edited and is kept; the new version is $source"
        return
    fi
    run install -m 0644 "$source" "$target"
    run install -D -m 0644 "$source" "$shipped"
}

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or with --dry-run to see the steps)" >&2
    exit 1
fi

# 1. Packages: Python's venv, nginx, and openssl for the placeholder certificate (on a fresh VM the package
#    lists are empty or stale, hence the update).
run apt-get update
run apt-get install -y python3-venv nginx openssl

# 2. A static system user and group; nginx (www-data) joins the group to reach the socket and the spool.
if ! getent passwd mospool >/dev/null; then
    run useradd --system --user-group --home-dir /var/lib/mo-spool --shell /usr/sbin/nologin mospool
fi
run usermod -a -G mospool www-data

# 3. The application, its virtualenv with the pinned requirements, and the `mospool` command on PATH.
#    The checkout's config.ini (local settings, maybe allow_private_networks = yes) is not copied.
run install -d -m 0755 "$PREFIX" "$APP"
run cp -r "$SOURCE/app.py" "$SOURCE/spool_worker.py" "$SOURCE/mospool" "$SOURCE/deploy" \
    "$SOURCE/requirements.txt" "$SOURCE/pyproject.toml" "$SOURCE/README.md" "$APP/"
[ -x "$VENV/bin/python" ] || run python3 -m venv "$VENV"
run "$VENV/bin/pip" install --quiet -r "$APP/requirements.txt"
run "$VENV/bin/pip" install --quiet --no-deps --force-reinstall "$APP"
run ln -sf "$VENV/bin/mospool" /usr/local/bin/mospool

# 4. Configuration: deploy/config.ini (safe defaults, the VM's spool, nginx in front), once; never overwritten.
run install -d -m 0750 -o root -g mospool "$ETC"
if [ -e "$ETC/config.ini" ]; then
    echo "# $ETC/config.ini exists and is kept; compare it with $APP/deploy/config.ini for new keys"
else
    run install -m 0640 -o root -g mospool "$APP/deploy/config.ini" "$ETC/config.ini"
fi

# 4b. A shared index (given on the command line, so set even in a kept config.ini): the URL, this VM's node
#     name, and the password copied under umask 077 into the folder only root and mospool may enter.
if [ -n "$INDEX_URL" ]; then
    SET_KEY=("$VENV/bin/python" "$APP/deploy/config_set.py" "$ETC/config.ini")
    run "${SET_KEY[@]}" index url "$INDEX_URL"
    run "${SET_KEY[@]}" spool node "${NODE:-$(hostname -s)}"
    if [ -n "$PASSWORD_FILE" ]; then
        (umask 077 && run install -m 0640 -o root -g mospool "$PASSWORD_FILE" "$ETC/index-password")
        run "${SET_KEY[@]}" index password_file "$ETC/index-password"
        echo "# the password is in $ETC/index-password now; you may delete $PASSWORD_FILE"
    fi
elif [ -n "$NODE" ]; then
    run "$VENV/bin/python" "$APP/deploy/config_set.py" "$ETC/config.ini" spool node "$NODE"
fi

# 5. TLS: nginx will not start without a certificate, and certbot needs nginx running to answer the ACME
#    challenge, so a self-signed placeholder goes in first (never replacing what is there: the operator's).
TLS=$ETC/tls
run install -d -m 0700 -o root -g root "$TLS"
if [ ! -e "$TLS/fullchain.pem" ]; then
    run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 90 \
        -subj /CN=mo-spool-placeholder -keyout "$TLS/privkey.pem" -out "$TLS/fullchain.pem"
    run chmod 0600 "$TLS/privkey.pem"
fi

# 6. The spool, owned by the service user; the folders inside are made by the services themselves.
run install -d -m 0750 -o mospool -g mospool /var/lib/mo-spool "$SPOOL"

# 7. systemd units. Where systemd is not running (an image being built in a chroot or container) they are
#    only enabled, to start at boot; a dry run shows the steps of a booted VM.
for unit in "${UNITS[@]}"; do
    run install -m 0644 "$APP/deploy/systemd/$unit" "/etc/systemd/system/$unit"
done
BOOTED=0
{ [ "$DRY_RUN" = 1 ] || [ -d /run/systemd/system ]; } && BOOTED=1
if [ "$BOOTED" = 1 ]; then
    run systemctl daemon-reload
    run systemctl enable --now mo-spool-receiver.service mo-spool-worker.service mo-spool-purge.timer
    run systemctl restart mo-spool-receiver.service mo-spool-worker.service
else
    echo "# systemd is not running here: enabling the units for the next boot only"
    run systemctl enable mo-spool-receiver.service mo-spool-worker.service mo-spool-purge.timer
fi

# 8. nginx: the public site, the browsing site and the allowlist; each kept once the operator edits it.
install_unless_edited "$APP/deploy/nginx/mo-spool.conf" /etc/nginx/sites-available/mo-spool
install_unless_edited "$APP/deploy/nginx/mo-spool-browse.conf" /etc/nginx/sites-available/mo-spool-browse
install_unless_edited "$APP/deploy/nginx/mo-spool-sinch-ips.conf" /etc/nginx/mo-spool-sinch-ips.conf
run install -d -m 0755 /var/www/letsencrypt
run ln -sf /etc/nginx/sites-available/mo-spool /etc/nginx/sites-enabled/mo-spool
run ln -sf /etc/nginx/sites-available/mo-spool-browse /etc/nginx/sites-enabled/mo-spool-browse
run nginx -t
[ "$BOOTED" = 1 ] && run systemctl reload-or-restart nginx

cat <<EOF

mo-spool is installed. What is left for you:
  1. Host name and certificate (nginx now serves a self-signed placeholder from $TLS):
     replace mo-spool.example.com in /etc/nginx/sites-available/mo-spool (kept from then on), then run
       certbot certonly --webroot -w /var/www/letsencrypt -d <your host> --deploy-hook 'systemctl reload nginx'
       ln -sf /etc/letsencrypt/live/<your host>/fullchain.pem $TLS/fullchain.pem
       ln -sf /etc/letsencrypt/live/<your host>/privkey.pem $TLS/privkey.pem
       nginx -t && systemctl reload nginx
  2. Sinch's source addresses (given at onboarding): add 'allow <address>;' lines to
     /etc/nginx/mo-spool-sinch-ips.conf and the same list to allowed_networks in $ETC/config.ini.
  3. A token (recommended): set token = <random letters and digits> in $ETC/config.ini, then
     systemctl reload mo-spool-receiver
  4. Give Sinch the postback URL: https://<your host>/postback/<token>
     (or https://<your host>/postback without a token).
  5. A second VM (docs/two-vms.md): run this script on each VM with --index-url and
     --index-password-file, put both behind a load balancer checking /healthz, and give Sinch its URL.
  Check it: curl -sk https://localhost/healthz
            sudo -u mospool mospool status      (mospool reads $ETC/config.ini)
EOF
