#!/usr/bin/env bash
# Reads a Delta table with Apache Spark + Delta Lake (an independent JVM reader) and checks the
# row count of each given version (time travel with versionAsOf) and the column types.
#
#   tests/spark/run.sh TABLE VERSION=ROWS [VERSION=ROWS ...] [--date-columns c6,c7] [--timestamp-columns _source_modified]
#   e.g. tests/spark/run.sh /tmp/t 0=18587 1=27945
# or runs Spark SQL statements in order, as another engine sharing the table (sql.py):
#   tests/spark/run.sh --sql 'DELETE FROM delta.`/tmp/t` WHERE c1 = "x"' 'OPTIMIZE delta.`/tmp/t`'
# A table on an S3-compatible server is named s3a://bucket/path, with LAKELOAD_SPARK_S3_ENDPOINT
# (http://127.0.0.1:PORT) and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set.
#
# Installs what it needs once, idempotently, under $LAKELOAD_SPARK_HOME
# (default $HOME/.cache/lakeload/spark):
#   venv-<pyspark>-<delta>/   a venv with pinned pyspark + delta-spark (PyPI)
#   jars/                     delta-spark_2.12 + delta-storage jars (Maven Central, sha1-checked)
# and Java 17 from Debian (openjdk-17-jre-headless) only if `java` is missing.
#
# Pins: Delta 3.3.2 is built against Spark 3.5.3 (Scala 2.12); pyspark 3.5.3 ships that Spark.
# Spark 3.5 runs on Java 17 (the launcher adds the --add-opens flags itself).
set -euo pipefail

PYSPARK_VERSION=3.5.3
DELTA_VERSION=3.3.2
SCALA_BINARY=2.12
# What pip resolved with them (pinned so that a cold install is the same everywhere).
PIP_PINS=(py4j==0.10.9.7 importlib_metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0)
MAVEN_REPO=${LAKELOAD_MAVEN_REPO:-https://repo1.maven.org/maven2}
CACHE=${LAKELOAD_SPARK_HOME:-$HOME/.cache/lakeload/spark}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "tests/spark: $*" >&2; exit 1; }

if [ $# -lt 2 ]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
script=read_delta.py
if [ "$1" = --sql ]; then
    script=sql.py
    shift
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { echo "tests/spark: $*" >&2; }

total_start=$(now)
mkdir -p "$CACHE"

# --- Java ------------------------------------------------------------------------------------
t=$(now)
if ! command -v java >/dev/null 2>&1; then
    step "java is missing: installing openjdk-17-jre-headless from Debian"
    SUDO=
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "java is missing and sudo is not available to install it"
        SUDO=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || die "apt-get update failed"
    $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null ||
        die "apt-get install openjdk-17-jre-headless failed"
    command -v java >/dev/null 2>&1 || die "java still missing after installing openjdk-17-jre-headless"
    step "java installed in $(elapsed "$t") s"
fi
java_version=$(java -version 2>&1 | head -1)
java_major=$(echo "$java_version" | sed -E 's/.*version "([0-9]+)(\.[0-9]+)?.*/\1/')
case "$java_major" in
    1) java_major=8 ;;
esac
if [ "$java_major" -lt 8 ] 2>/dev/null || [ "$java_major" -gt 21 ] 2>/dev/null; then
    die "Spark $PYSPARK_VERSION needs Java 8/11/17/21; \`java\` is $java_version (set JAVA_HOME/PATH to a Java 17)"
fi
step "java: $java_version"

# --- Python venv with pyspark + delta-spark --------------------------------------------------
# Tests call this script side by side: one installs while the others wait for it (without the
# lock, a second call removed the venv the first was creating).
exec 9>"$CACHE/.install.lock"
flock 9
VENV=$CACHE/venv-$PYSPARK_VERSION-$DELTA_VERSION
t=$(now)
if [ ! -f "$VENV/.installed" ]; then
    step "installing pyspark==$PYSPARK_VERSION delta-spark==$DELTA_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        "pyspark==$PYSPARK_VERSION" "delta-spark==$DELTA_VERSION" "${PIP_PINS[@]}" ||
        die "pip install pyspark==$PYSPARK_VERSION delta-spark==$DELTA_VERSION failed"
    touch "$VENV/.installed"
    step "venv ready in $(elapsed "$t") s ($(du -sh "$VENV" | cut -f1))"
else
    step "venv cached ($VENV)"
fi

# --- Delta jars from Maven Central -----------------------------------------------------------
JARS_DIR=$CACHE/jars
mkdir -p "$JARS_DIR"
fetch_jar() { # group/path artifact version
    local group=$1 artifact=$2 version=$3
    local name=$artifact-$version.jar
    local url=$MAVEN_REPO/$group/$artifact/$version/$name
    if [ -f "$JARS_DIR/$name" ]; then
        echo "$JARS_DIR/$name"
        return
    fi
    local tmp
    tmp=$(mktemp "$JARS_DIR/.$name.XXXXXX")
    curl -fsSL --retry 3 -m 300 -o "$tmp" "$url" || { rm -f "$tmp"; die "download failed: $url"; }
    local want got
    want=$(curl -fsSL --retry 3 -m 60 "$url.sha1" | cut -c1-40) || { rm -f "$tmp"; die "download failed: $url.sha1"; }
    got=$(sha1sum "$tmp" | cut -c1-40)
    [ "$want" = "$got" ] || { rm -f "$tmp"; die "sha1 mismatch for $url: want $want, got $got"; }
    chmod 644 "$tmp"
    mv "$tmp" "$JARS_DIR/$name"
    echo "$JARS_DIR/$name"
}
t=$(now)
have_jars=0
[ -f "$JARS_DIR/delta-spark_$SCALA_BINARY-$DELTA_VERSION.jar" ] &&
    [ -f "$JARS_DIR/delta-storage-$DELTA_VERSION.jar" ] && have_jars=1
jars=$(fetch_jar io/delta "delta-spark_$SCALA_BINARY" "$DELTA_VERSION"),$(fetch_jar io/delta delta-storage "$DELTA_VERSION")
if [ "$have_jars" = 0 ]; then
    step "delta jars fetched in $(elapsed "$t") s"
else
    step "delta jars cached ($JARS_DIR)"
fi
# Hadoop's S3A (the hadoop-aws of the Hadoop 3.3.4 pyspark ships, and the AWS SDK bundle it was
# built with, 280 MB): only for a table on S3 (LAKELOAD_SPARK_S3_ENDPOINT, see session.py).
if [ -n "${LAKELOAD_SPARK_S3_ENDPOINT:-}" ]; then
    t=$(now)
    jars=$jars,$(fetch_jar org/apache/hadoop hadoop-aws 3.3.4),$(fetch_jar com/amazonaws aws-java-sdk-bundle 1.12.262)
    step "S3A jars ready in $(elapsed "$t") s"
fi
flock -u 9
step "install steps took $(elapsed "$total_start") s"

# --- Read -----------------------------------------------------------------------------------
# Spark binds to loopback only (otherwise it picks the first interface's address).
export SPARK_LOCAL_IP=127.0.0.1
t=$(now)
set +e
LAKELOAD_SPARK_JARS=$jars "$VENV/bin/python" "$HERE/$script" "$@"
rc=$?
set -e
step "$script took $(elapsed "$t") s"
if [ "$script" = sql.py ]; then
    [ "$rc" = 0 ] || die "FAILED: Spark SQL (exit $rc, see above)"
    exit 0
fi
if [ "$rc" != 0 ]; then
    die "FAILED: Spark $PYSPARK_VERSION + Delta $DELTA_VERSION read of $1 did not match (exit $rc, see above)"
fi
step "OK: Spark $PYSPARK_VERSION + Delta $DELTA_VERSION read every version as expected"
