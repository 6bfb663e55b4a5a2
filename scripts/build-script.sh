#!/bin/sh
# Builds one extension install script from its SQL sources.
#   scripts/build-script.sh <core|meta|service> <output> [sources...]
# Service scripts are wrapped in pgcloud.service_begin()/service_end(), which
# create the service schema and role and hand every object to that role.
set -eu
what=$1; out=$2; shift 2
case $what in
  core) ext=pgcloud_core ;;
  meta) ext=pgcloud ;;
  *)    ext=pgcloud_$what ;;
esac
{
  echo "-- $ext install script, built by make from sql/ — do not edit"
  printf '%s\n' "\\echo Use \"CREATE EXTENSION $ext\" to load this file. \\quit"
  echo
  case $what in
    core|meta) ;;
    *) echo "SELECT pgcloud.service_begin('$what');" ;;
  esac
  for f in "$@"; do
    echo "-- source: $f"
    cat "$f"
    echo
  done
  case $what in
    core|meta) ;;
    *) echo "SELECT pgcloud.service_end('$what');" ;;
  esac
} > "$out.tmp"
mv "$out.tmp" "$out"
