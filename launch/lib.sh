#!/usr/bin/env bash
# Helpers shared by the launch scripts (sourced, not run).

# Prints a command as one copy-pasteable shell line.
show() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+="$a "
    else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}
