# Sourced by the other scripts: make .venv (if needed) and install the pinned requirements file "$1".
venv_setup() {
    local requirements="$1"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv || {
            echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
            return 1
        }
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
}
