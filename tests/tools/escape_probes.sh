#!/usr/bin/env bash
# The public escape probes (../shared/probes) through a real nonod, as docs/security-model.md
# reports them. Usage: tests/tools/escape_probes.sh REPO [UID [PROFILE]]
#   UID empty: a user daemon as root; UID N: the system daemon (socket_group nogroup), the
#   client and the plant running as uid N. PROFILE: a profile path (default: --allow-cwd only).
# Prints the ESCAPED/SKIPPED lines, the summary and the host-side check; leaves its files in
# the printed base directory.
set -u
SHARED=${SHARED:-$(cd "$(dirname "$0")/../../.." && pwd)/shared}
REPO=$1; USERID=${2:-}; PROFILE=${3:-}; PARGS=""; [ -n "$PROFILE" ] && PARGS="--profile $PROFILE"
PY=$REPO/.venv/bin/python
BASE=$(mktemp -d /tmp/nprobe-XXXX); chmod 755 $BASE
HOMEDIR=$BASE/home; mkdir -p $HOMEDIR
WORK=$HOMEDIR/probe-work; mkdir -p $WORK
PLANT=$BASE/plant
cp "$SHARED/probes/escape_probes.py" $BASE/
if [ -n "$USERID" ]; then mkdir -p $PLANT; chown -R $USERID:$USERID $HOMEDIR $PLANT; fi
asuser() { if [ -n "$USERID" ]; then setpriv --reuid=$USERID --regid=$USERID --clear-groups "$@"; else "$@"; fi; }
export HOME=$HOMEDIR
# plant as the user
asuser env HOME=$HOMEDIR /usr/bin/python3 $BASE/escape_probes.py plant --dir $PLANT --home $HOMEDIR --seconds 300 > $BASE/plant.log 2>&1 &
PLANT_PID=$!
for i in $(seq 50); do [ -f $PLANT/manifest.json ] && break; sleep 0.2; done
cp $BASE/escape_probes.py $PLANT/manifest.json $WORK/
if [ -n "$USERID" ]; then chown -R $USERID:$USERID $WORK; fi
(cd $WORK && asuser git init -q . )
if [ -n "$USERID" ]; then
  SOCK=$BASE/sys/nonod.sock
  printf '[daemon]\nsocket = "%s"\nstate_dir = "%s"\nsocket_group = "nogroup"\n' $SOCK $BASE/state > $BASE/nonod.toml
  $PY -m nonod --system --config $BASE/nonod.toml > $BASE/daemon.log 2>&1 &
else
  SOCK=$BASE/run/nonod.sock
  printf '[daemon]\nsocket = "%s"\nstate_dir = "%s"\n' $SOCK $BASE/state > $BASE/nonod.toml
  $PY -m nonod --config $BASE/nonod.toml > $BASE/daemon.log 2>&1 &
fi
DPID=$!
for i in $(seq 100); do [ -S $SOCK ] && break; sleep 0.1; done
set +e
CENV="HOME=$HOMEDIR NONO_SOCKET=$SOCK NONO_NO_AUTOSTART=1 PATH=/usr/bin:/bin"
[ -f $PLANT/canary.env ] && CENV="$CENV $(grep -o 'export [A-Z_]*=[^ ]*' $PLANT/canary.env | sed 's/export //' | tr '\n' ' ')"
cd $WORK
if [ -n "$USERID" ]; then
  # the client must be runnable by that uid: Debian's python with the repo on PYTHONPATH
  asuser env $CENV script -qec "$PY -m nonoctl launch $PARGS --allow-cwd --block-net -- /usr/bin/python3 escape_probes.py run --manifest manifest.json" /dev/null > $BASE/run.log 2>&1
else
  env $CENV script -qec "$PY -m nonoctl launch $PARGS --allow-cwd --block-net -- /usr/bin/python3 escape_probes.py run --manifest manifest.json" /dev/null > $BASE/run.log 2>&1
fi
echo "run exit: $?"
grep -E "ESCAPED|SKIPPED" $BASE/run.log
grep -cE " BLOCKED " $BASE/run.log | sed 's/^/blocked: /'
tail -3 $BASE/run.log
asuser env HOME=$HOMEDIR /usr/bin/python3 $BASE/escape_probes.py check --dir $PLANT; echo "check exit: $?"
asuser env HOME=$HOMEDIR /usr/bin/python3 $BASE/escape_probes.py clean --dir $PLANT >/dev/null 2>&1
kill $DPID 2>/dev/null; wait $DPID 2>/dev/null
kill $PLANT_PID 2>/dev/null
echo "base: $BASE"
