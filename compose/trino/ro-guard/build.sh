#!/usr/bin/env bash
# Build the read-only guard plugin for Trino into OUTDIR (a plugin directory: mount or copy it
# to <trino>/plugin/controlroom-read-only-guard). Needs mvn (for trino-spi from the Maven
# repository) and a JDK that can target Java 24 (javac, jar).
#   compose/trino/ro-guard/build.sh OUTDIR [TRINO_VERSION]
set -euo pipefail
out=${1:?usage: build.sh OUTDIR [TRINO_VERSION]}
version=${2:-476}
here=$(cd "$(dirname "$0")" && pwd)
java_home=${JAVA_HOME:-$(ls -d /usr/lib/jvm/temurin-2[4-9]* /usr/lib/jvm/*-2[4-9]* 2>/dev/null | head -1)}
[ -x "$java_home/bin/javac" ] || { echo "no JDK 24+ with javac (set JAVA_HOME)" >&2; exit 1; }
mvn -q dependency:get -Dartifact="io.trino:trino-spi:${version}" >&2
spi="${HOME}/.m2/repository/io/trino/trino-spi/${version}/trino-spi-${version}.jar"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$java_home/bin/javac" --release 24 -nowarn -cp "$spi" -d "$work/classes" "$here/ReadOnlyGuardPlugin.java"
mkdir -p "$work/classes/META-INF/services" "$out"
echo "io.controlroom.trino.ReadOnlyGuardPlugin" > "$work/classes/META-INF/services/io.trino.spi.Plugin"
"$java_home/bin/jar" --create --file "$out/controlroom-read-only-guard.jar" -C "$work/classes" .
echo "$out/controlroom-read-only-guard.jar"
