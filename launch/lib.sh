#!/usr/bin/env bash
# Helpers shared by the launch scripts (sourced, not run).

# Prints "<script>: message" to stderr and exits 2 (bad usage).
die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# Prints a command as one copy-pasteable shell line.
show() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+="$a "
    else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}
