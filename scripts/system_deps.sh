#!/usr/bin/env bash
# Debian packages the test suite needs: PostgreSQL and Redis servers (started on loopback by
# tests/servers.py), Chromium for the browser test, docker-compose to validate compose/, Maven
# to fetch Trino and the Spark jars, a JDK 17 for Spark. Trino 476 needs Java 24.0.1 or newer,
# which Debian 12 does not package: the machine's Temurin JDK (/usr/lib/jvm/temurin-*) is used;
# tests/trino_server.py names what it needs if none fits.
# Installs only what is missing; needs root (or passwordless sudo) for apt-get.
set -euo pipefail
need=()
[ -n "$(ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null)" ] || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v mvn >/dev/null || need+=(maven)  # fetches the Trino server for the SQL warehouse tests
command -v npm >/dev/null || need+=(nodejs npm)  # the tests' OpenID Connect provider (tests/oidc_server.py)
command -v prometheus >/dev/null || need+=(prometheus)  # scrapes the test server (tests/prometheus_server.py)
# Spark 4.1 runs on JDK 17 only (not on Trino's Temurin 25): lakehouse/spark/runtime.py picks it.
grep -qs '^JAVA_VERSION="17' /usr/lib/jvm/*/release || need+=(openjdk-17-jdk-headless)
command -v python3.11 >/dev/null || command -v python3 >/dev/null || need+=(python3 python3-venv)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "› installing Debian packages: ${need[*]}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
