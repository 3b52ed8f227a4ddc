#!/usr/bin/env bash
# The public escape probes (../shared/probes) through a real nonod, as docs/security-model.md
# reports them. Usage: tests/tools/escape_probes.sh REPO [UID [PROFILE]]
#   UID empty: a user daemon as root; UID N: the system daemon (socket_group nogroup), the
#   client and the plant running as uid N. PROFILE: a profile path (default: --allow-cwd only).
# NETARGS (environment): the probe session's network flags, default --block-net; e.g.
# NETARGS="--allow-domain api.github.com" for a session whose only way out is the proxy.
# MODE (environment): the daemon's [sandbox] mode, e.g. MODE=landlock-only (the profile must
# then accept what that mode cannot give, docs/sandbox.md "Without user namespaces").
# PROBEROOT (environment): where the base directory is made (default /tmp; outside /tmp when
# the profile accepts the host's /tmp, private_tmp, or the home there is granted with it).
# Prints the ESCAPED/SKIPPED lines, the summary and the host-side check; leaves its files in
# the printed base directory.
set -u
SHARED=${SHARED:-$(cd "$(dirname "$0")/../../.." && pwd)/shared}
NETARGS=${NETARGS:---block-net}
REPO=$1; USERID=${2:-}; PROFILE=${3:-}; PARGS=""; [ -n "$PROFILE" ] && PARGS="--profile $PROFILE"
PY=$REPO/.venv/bin/python
BASE=$(mktemp -d "${PROBEROOT:-/tmp}/nprobe-XXXX"); chmod 755 $BASE
HOMEDIR=$BASE/home; mkdir -p $HOMEDIR
WORK=$HOMEDIR/probe-work; mkdir -p $WORK
PLANT=$BASE/plant
cp "$SHARED/probes/escape_probes.py" $BASE/
if [ -n "$USERID" ]; then mkdir -p $PLANT; chown -R $USERID:$USERID $HOMEDIR $PLANT; fi
asuser() { if [ -n "$USERID" ]; then setpriv --reuid=$USERID --regid=$USERID --clear-groups "$@"; else "$@"; fi; }
export HOME=$HOMEDIR
# What the three otherwise skipped attempts need: a runtime dir with the plant's socket in it,
# a host service socket (a session bus of the user's), another session's directory.
RUNTIME=$BASE/runtime; mkdir -m 700 $RUNTIME
OTHER=$BASE/other; mkdir -p $OTHER; echo "nono probe: another session's file" > $OTHER/notes.txt
[ -n "$USERID" ] && chown -R $USERID:$USERID $RUNTIME $OTHER
BUS=$RUNTIME/bus
asuser dbus-daemon --session --address=unix:path=$BUS --fork --print-pid > $BASE/bus.pid 2>$BASE/bus.log
# plant as the user
asuser env HOME=$HOMEDIR XDG_RUNTIME_DIR=$RUNTIME DBUS_SESSION_BUS_ADDRESS=unix:path=$BUS /usr/bin/python3 $BASE/escape_probes.py plant --dir $PLANT --home $HOMEDIR --seconds 300 > $BASE/plant.log 2>&1 &
PLANT_PID=$!
for i in $(seq 50); do [ -f $PLANT/manifest.json ] && break; sleep 0.2; done
cp $BASE/escape_probes.py $PLANT/manifest.json $WORK/
if [ -n "$USERID" ]; then chown -R $USERID:$USERID $WORK; fi
(cd $WORK && asuser git init -q . )
if [ -n "${MODE:-}" ]; then SANDBOX=$(printf '[sandbox]\nmode = "%s"\n' "$MODE"); else SANDBOX=""; fi
if [ -n "$USERID" ]; then
  SOCK=$BASE/sys/nonod.sock
  printf '[daemon]\nsocket = "%s"\nstate_dir = "%s"\nsocket_group = "nogroup"\n%s\n' $SOCK $BASE/state "$SANDBOX" > $BASE/nonod.toml
  $PY -m nonod --system --config $BASE/nonod.toml > $BASE/daemon.log 2>&1 &
else
  SOCK=$BASE/run/nonod.sock
  printf '[daemon]\nsocket = "%s"\nstate_dir = "%s"\n%s\n' $SOCK $BASE/state "$SANDBOX" > $BASE/nonod.toml
  $PY -m nonod --config $BASE/nonod.toml > $BASE/daemon.log 2>&1 &
fi
DPID=$!
for i in $(seq 100); do [ -S $SOCK ] && break; sleep 0.1; done
set +e
CENV="HOME=$HOMEDIR NONO_SOCKET=$SOCK NONO_NO_AUTOSTART=1 PATH=/usr/bin:/bin"
[ -f $PLANT/canary.env ] && CENV="$CENV $(grep -o 'export [A-Z_]*=[^ ]*' $PLANT/canary.env | sed 's/export //' | tr '\n' ' ')"
# another session of the same user, alive while the probes run, with its own directory
(cd $OTHER && asuser env $CENV $PY -m nonoctl launch --name probe-other -d --allow-cwd --block-net -- /usr/bin/sleep 600 > $BASE/other.log 2>&1)
cd $WORK
# as that uid, the client must be runnable by it: Debian's python, the repo outside /root
asuser env $CENV script -qec "$PY -m nonoctl launch $PARGS --allow-cwd $NETARGS -- /usr/bin/python3 escape_probes.py run --manifest manifest.json --other $OTHER" /dev/null > $BASE/run.log 2>&1
echo "run exit: $?"
asuser env $CENV $PY -m nonoctl stop probe-other > /dev/null 2>&1
grep -E "ESCAPED|SKIPPED" $BASE/run.log
grep -cE " BLOCKED " $BASE/run.log | sed 's/^/blocked: /'
tail -3 $BASE/run.log
asuser env HOME=$HOMEDIR /usr/bin/python3 $BASE/escape_probes.py check --dir $PLANT; echo "check exit: $?"
asuser env HOME=$HOMEDIR /usr/bin/python3 $BASE/escape_probes.py clean --dir $PLANT >/dev/null 2>&1
kill $DPID 2>/dev/null; wait $DPID 2>/dev/null
kill $PLANT_PID 2>/dev/null
kill "$(head -1 $BASE/bus.pid)" 2>/dev/null
echo "base: $BASE"
