# Sourced by the scripts before anything is installed: with -h or --help among the arguments, print
# the script's header comment and, when its virtual environment already exists, the options of the
# Python entry it runs; then exit 0.
#   print_usage_if_asked SCRIPT VENV MODULE "$@"     (VENV and MODULE may be empty)
print_usage_if_asked() {
    local script="$1" venv="$2" module="$3"
    shift 3
    local arg
    for arg in "$@"; do
        if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
            sed -n '2,/^set -euo pipefail/p' "$script" | sed '$d' | sed -E 's/^# ?//'
            if [ -n "$module" ]; then
                if [ -x "$venv/bin/python" ]; then
                    echo
                    "$venv/bin/python" -m "$module" --help
                else
                    echo
                    echo "(the options of python -m $module print here once $venv is installed: bash scripts/setup.sh)"
                fi
            fi
            exit 0
        fi
    done
}
