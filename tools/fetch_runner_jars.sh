#!/usr/bin/env bash
# Fetches Beam's Flink and Spark job servers with Maven into Beam's own jar cache, so that
# `--runner FlinkRunner` and `--runner SparkRunner` start them without a jar flag.
#
# Maven Central, as reached from these machines, serves no `beam-runners-*-job-server` jar
# (the shaded jars Beam's Python runners download) and no Beam artifact newer than 2.76.0.
# The runner libraries `beam-runners-flink-1.19` and `beam-runners-spark-3` are served at
# 2.62.0 and 2.70.0, but 2.70.0's `beam-runners-java-job-service` is not: 2.62.0 is the
# newest version whose dependencies all resolve. So this script assembles each job server
# from the runner library and its dependencies: Maven resolves them into `<jar name>-lib/`
# beside a small jar whose manifest names the driver class and that classpath, under the
# file name Beam's runners use for a job server jar. `pipelines/portable.py` points the
# jobs at it when Beam's own jar is not cached.
#
# `clusters` also installs, each in its own venv under $RUNNER_CLUSTERS, the Flink and Spark
# distributions the tests start as separate processes (a JobManager and a TaskManager; a
# standalone master and worker): PyPI's apache-flink + apache-flink-libraries of the Flink
# the job server is built with (its bin/, conf/ and lib/; installed without dependencies, as
# apache-flink pins an older apache-beam), and pyspark of the job server's Spark (sbin/, jars/).
#
# Usage: tools/fetch_runner_jars.sh [flink|spark|clusters]...   (all three by default)
# Environment: BEAM_JAR_CACHE (default ~/.apache_beam/cache/jars), MVN (default mvn),
#   RUNNER_CLUSTERS (default ~/.cache/beam-kinesis/clusters), PYTHON (default python3).
set -euo pipefail

# Keep in step with pipelines/portable.py (RUNNER_JARS).
BEAM_RUNNER_VERSION=2.62.0
FLINK_MINOR=1.19
SPARK_VERSION=3.5.7      # a Spark 3.5 (Java 17); beam-runners-spark-3:2.62.0 is built on 3.2.2
SCALA_MINOR=2.12
FLINK_VERSION=1.19.0     # what beam-runners-flink-1.19:2.62.0 is built against
SLF4J_FLINK=1.7.30       # the slf4j-api beam-runners-flink-1.19:2.62.0 brings
SLF4J_SPARK=2.0.7        # Spark 3.5's (it logs through log4j2's slf4j2 binding)

CACHE="${BEAM_JAR_CACHE:-$HOME/.apache_beam/cache/jars}"
CLUSTERS="${RUNNER_CLUSTERS:-$HOME/.cache/beam-kinesis/clusters}"
PYTHON="${PYTHON:-python3}"
MVN="${MVN:-mvn}"
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

command -v "$MVN" >/dev/null || { echo "fetch_runner_jars: Maven ($MVN) is not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "fetch_runner_jars: python3 is needed" >&2; exit 1; }
mkdir -p "$CACHE"

dependency() {  # group artifact version [scope]
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version>%s</dependency>\n' \
    "$1" "$2" "$3" "${4:+<scope>$4</scope>}"
}

# assemble NAME MAIN_CLASS DEPENDENCY_XML: resolves the dependencies into $CACHE/NAME-lib/
# and writes $CACHE/NAME.jar, a manifest-only jar that runs MAIN_CLASS on them.
assemble() {
  local name=$1 main=$2 dependencies=$3
  local jar="$CACHE/$name.jar" lib="$CACHE/$name-lib"
  if [[ -f "$jar" && -f "$lib/.complete" ]]; then
    echo "fetch_runner_jars: $jar is already there"
    return
  fi
  local work
  work=$(mktemp -d)
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.beam-kinesis</groupId>
  <artifactId>$name</artifactId>
  <version>1</version>
  <dependencies>
$dependencies
  </dependencies>
</project>
EOF
  echo "fetch_runner_jars: resolving $name with Maven"
  rm -rf "$lib.tmp"
  if ! "$MVN" -B -q -f "$work/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$lib.tmp" >"$work/mvn.log" 2>&1; then
    tail -40 "$work/mvn.log" >&2
    echo "fetch_runner_jars: Maven could not resolve $name (log above)" >&2
    rm -rf "$work" "$lib.tmp"
    exit 1
  fi
  rm -rf "$lib"
  mv "$lib.tmp" "$lib"
  python3 - "$jar" "$lib" "$main" <<'EOF'
import os
import sys
import zipfile

jar, lib, main = sys.argv[1:]
# Class-Path entries are URLs relative to the jar; absolute file URLs also let a Spark
# executor on this machine, which fetches the jar into its own work directory, find them.
entries = ['file:' + os.path.join(lib, name) for name in sorted(os.listdir(lib))
           if name.endswith('.jar')]
lines = ['Manifest-Version: 1.0', 'Main-Class: ' + main, 'Created-By: beam-kinesis']
# A manifest line holds at most 72 bytes; longer ones continue on lines starting with a space.
header = 'Class-Path: ' + ' '.join(entries)
lines.append(header[:70])
lines += [' ' + header[i:i + 69] for i in range(70, len(header), 69)]
with zipfile.ZipFile(jar + '.tmp', 'w') as out:
    out.writestr('META-INF/MANIFEST.MF', '\r\n'.join(lines) + '\r\n\r\n')
os.replace(jar + '.tmp', jar)
EOF
  touch "$lib/.complete"
  rm -rf "$work"
  echo "fetch_runner_jars: $jar ($(ls "$lib" | wc -l) jars in $lib)"
}

fetch_flink() {
  assemble "beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_RUNNER_VERSION" \
    org.apache.beam.runners.flink.FlinkJobServerDriver \
    "$(dependency org.apache.beam "beam-runners-flink-$FLINK_MINOR" "$BEAM_RUNNER_VERSION")
$(dependency org.slf4j slf4j-simple "$SLF4J_FLINK")"
}

fetch_spark() {
  # The runner declares Spark itself as `provided`: a job server brings its own.
  assemble "beam-runners-spark-3-job-server-$BEAM_RUNNER_VERSION" \
    org.apache.beam.runners.spark.SparkJobServerDriver \
    "$(dependency org.apache.beam beam-runners-spark-3 "$BEAM_RUNNER_VERSION")
$(dependency org.apache.spark "spark-core_$SCALA_MINOR" "$SPARK_VERSION")
$(dependency org.apache.spark "spark-streaming_$SCALA_MINOR" "$SPARK_VERSION")
$(dependency org.apache.spark "spark-sql_$SCALA_MINOR" "$SPARK_VERSION")
$(dependency org.slf4j slf4j-api "$SLF4J_SPARK")"
}

# install_venv DIR PACKAGE...: a venv at DIR with PACKAGEs and none of their dependencies.
install_venv() {
  local dir=$1
  shift
  if [[ -f "$dir/.complete" ]]; then
    echo "fetch_runner_jars: $dir is already there"
    return
  fi
  echo "fetch_runner_jars: installing $* into $dir"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --no-deps "$@"
  touch "$dir/.complete"
}

fetch_clusters() {
  install_venv "$CLUSTERS/flink-$FLINK_VERSION" "apache-flink==$FLINK_VERSION" \
    "apache-flink-libraries==$FLINK_VERSION"
  install_venv "$CLUSTERS/spark-$SPARK_VERSION" "pyspark==$SPARK_VERSION"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(flink spark clusters)
for target in "${targets[@]}"; do
  case "$target" in
    flink) fetch_flink ;;
    spark) fetch_spark ;;
    clusters) fetch_clusters ;;
    *) echo "fetch_runner_jars: unknown target $target (flink, spark or clusters)" >&2; exit 2 ;;
  esac
done
