# Sourced by the other scripts: make .venv (if needed) and install the pinned requirements file "$1".
venv_setup() {
    local requirements="$1"
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv 2>/dev/null; then
            rm -rf .venv
            # Debian and Ubuntu ship venv apart from python3; as root, fetch it rather than stop.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            fi
            python3 -m venv .venv || {
                echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
                return 1
            }
        fi
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
}

# The `mospool` console script (pyproject.toml) in .venv/bin, from this checkout (editable: edits apply at
# once). Its deps are the pinned requirements venv_setup installed.
venv_command() {
    [ -x .venv/bin/mospool ] ||
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
}
