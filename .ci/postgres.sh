# Start a throw-away PostgreSQL server for the distributed-study tests and export ARCHLAB_PG_URL.
#
# Source it (". .ci/postgres.sh") so the variable reaches the test run; running it as a script
# prints the URL instead. It installs Debian's `postgresql` with apt-get when no initdb is found,
# and psycopg 3 (a dependency of archlab) when Python lacks it, creates a cluster in a temporary folder
# owned by the server's user ("postgres" when run as root: initdb refuses root), starts it on a
# Unix socket in that folder only (no TCP port, so parallel runs cannot collide), and creates the
# database "archlab". The URL has the README's form, postgresql://USER@/archlab?host=DIR (psycopg 3).
# `archlab_pg_stop` stops the server and removes the folder. On failure it
# returns non-zero and leaves ARCHLAB_PG_URL unset (the tests marked `postgres` then skip).

archlab_pg_bin() {
    # Debian keeps the server tools out of PATH; a PATH initdb may be a lone symlink into them.
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

archlab_pg_start() {
    local bin dir owner run
    bin="$(archlab_pg_bin)"
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "postgres.sh: installing Debian's postgresql" >&2
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
            || { echo "postgres.sh: apt-get install postgresql failed" >&2; return 1; }
        bin="$(archlab_pg_bin)"
    fi
    if ! python -c "import psycopg" >/dev/null 2>&1; then
        python -m pip install -q "psycopg[binary]" >/dev/null || { echo "postgres.sh: cannot install psycopg" >&2; return 1; }
    fi
    dir="$(mktemp -d /tmp/archlab-pg.XXXXXX)" || return 1
    owner="$(id -un)"
    run=()
    if [ "$(id -u)" = 0 ]; then
        owner=postgres
        chown postgres "$dir"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" -D "$dir/data" -U "$owner" -A trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { echo "postgres.sh: initdb failed: $(tail -n 3 "$dir/initdb.log")" >&2; rm -rf "$dir"; return 1; }
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -c listen_addresses='' -c max_connections=50 -c fsync=off" start >/dev/null \
        || { echo "postgres.sh: the server did not start: $(tail -n 3 "$dir/server.log")" >&2; rm -rf "$dir"; return 1; }
    "${run[@]}" "$bin/createdb" -h "$dir" -U "$owner" archlab \
        || { echo "postgres.sh: createdb failed" >&2; "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop; rm -rf "$dir"; return 1; }
    ARCHLAB_PG_DIR="$dir"
    ARCHLAB_PG_CTL=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
    export ARCHLAB_PG_URL="postgresql://$owner@/archlab?host=$dir"
    echo "ARCHLAB_PG_URL=$ARCHLAB_PG_URL"
}

archlab_pg_stop() {
    [ -n "${ARCHLAB_PG_DIR:-}" ] || return 0
    "${ARCHLAB_PG_CTL[@]}" >/dev/null 2>&1
    rm -rf "$ARCHLAB_PG_DIR"
    unset ARCHLAB_PG_URL ARCHLAB_PG_DIR ARCHLAB_PG_CTL
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    archlab_pg_start || exit 1
    echo "stop it with: ${ARCHLAB_PG_CTL[*]} && rm -rf $ARCHLAB_PG_DIR"
else
    archlab_pg_start
fi
