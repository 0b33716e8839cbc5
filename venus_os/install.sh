#!/bin/sh
# Install (or re-install) the bluesmart-charger service on Venus OS. Idempotent: run it again
# at any time; /data/rc.local runs it at every boot, because /service is rebuilt in RAM at boot
# and a firmware update replaces the rootfs (and with it the udev rule below).
#
#   sh /data/etc/bluesmart-charger/install.sh
#
# What it does, in this order:
#  1. the original project (wasn-eu/pvtex Victron_BlueSmart_IP22, same directory and service
#     name): config.ini -> config.json (migrate.py, only if there is no config.json yet), its
#     service stopped, its /service link and rc.local line removed, its files moved to
#     original/
#  2. config.json from config.sample.json if there is none (a user's is never overwritten)
#  3. the daemontools service: service/run, service/log/run (multilog into
#     /data/log/bluesmart-charger), the link /service/bluesmart-charger
#  4. the line "sh /data/etc/bluesmart-charger/install.sh" in /data/rc.local
#  5. for a USB serial adapter (uart.port /dev/tty* or /dev/serial/by-id/*): a udev rule that
#     keeps serial-starter (Venus's VE.Direct driver) off it
#  6. a running service is restarted (a stopped one started) to load what was installed
#
# ROOT (empty on the GX) prefixes every path: the tests install into a throwaway root.

ROOT="${ROOT:-}"
NAME=bluesmart-charger
GX_DIR=/data/etc/$NAME # the paths as the GX sees them, written into files
DIR=$ROOT$GX_DIR
SVC_DIR=$DIR/service
LINK=$ROOT/service/$NAME
RC=$ROOT/data/rc.local
RC_LINE="sh $GX_DIR/install.sh --boot"
BOOT=no # --boot: run by /data/rc.local, nobody watching: never remount the root filesystem
[ "${1:-}" = --boot ] && BOOT=yes
ORIGINAL_RC_LINE="bash $GX_DIR/install.sh" # what the original's install.sh added
LOG_DIR=$ROOT/data/log/$NAME
RULES_DIR=$ROOT/etc/udev/rules.d
# after serial-starter.rules (udev reads the rules files in name order, the last assignment
# wins): a rule of serial-starter.rules for the same device (a VE.Direct cable) would
# otherwise undo ours
RULES=$RULES_DIR/zz-$NAME.rules
REMOUNT_RW=$ROOT/opt/victronenergy/swupdate-scripts/remount-rw.sh

say() { echo "install: $*"; }
fail() { echo "install: ERROR: $*" >&2; exit 1; }

# --- where we are ------------------------------------------------------------------------
here=$(cd "$(dirname "$0")" && pwd -P) || fail "cannot find the script's directory"
want=$(cd "$DIR" 2>/dev/null && pwd -P) || want=""
[ "$here" = "$want" ] || fail "the package must be in $GX_DIR (this is $here): unpack it with
  tar -xzf bluesmart-charger-<version>.tar.gz -C /data/etc"
command -v python3 >/dev/null 2>&1 || fail "python3 not found"
[ -f "$DIR/service.py" ] || fail "$GX_DIR/service.py is missing: unpack the whole package"

# --- 1. the original project --------------------------------------------------------------
original=""
[ -f "$DIR/config.ini" ] && original="$original config.ini"
[ -f "$DIR/$NAME.py" ] && original="$original $NAME.py"
[ -f "$RC" ] && grep -qxF "$ORIGINAL_RC_LINE" "$RC" && original="$original rc.local-line"
if [ -f "$SVC_DIR/run" ] && ! grep -q "service\.py" "$SVC_DIR/run"; then
    original="$original service/run"
fi
if [ -n "$original" ]; then
    say "the original Victron_BlueSmart_IP22 service is installed here (found:$original): taking it over"
    if [ -f "$DIR/config.ini" ]; then
        if [ -e "$DIR/config.json" ]; then
            say "config.json exists: kept; config.ini is not migrated"
        else
            PYTHONDONTWRITEBYTECODE=1 python3 "$DIR/migrate.py" --ini "$DIR/config.ini" --out "$DIR/config.json" \
                --root "$ROOT" || fail "config.ini could not be migrated (see above); nothing was changed"
        fi
    else
        say "no config.ini: nothing to migrate"
    fi
    if [ -L "$LINK" ] || [ -e "$LINK" ]; then
        svc -d "$LINK"
        say "stopped the original's service (svc -d /service/$NAME)"
        rm -f "$LINK"
        say "removed the original's link /service/$NAME"
    fi
    # its program, should it still run without supervise (started by hand)
    pkill -f "$GX_DIR/$NAME.py" >/dev/null 2>&1 || true
    if [ -f "$RC" ] && grep -qxF "$ORIGINAL_RC_LINE" "$RC"; then
        grep -vxF "$ORIGINAL_RC_LINE" "$RC" > "$RC.$NAME.tmp"
        cat "$RC.$NAME.tmp" > "$RC" # in place: the file keeps its mode
        rm -f "$RC.$NAME.tmp"
        say "removed the original's line \"$ORIGINAL_RC_LINE\" from /data/rc.local"
    fi
    moved=""
    for f in config.ini config.sample.ini "$NAME.py"; do
        if [ -f "$DIR/$f" ]; then
            mkdir -p "$DIR/original"
            mv -f "$DIR/$f" "$DIR/original/$f"
            moved="$moved $f"
        fi
    done
    [ -n "$moved" ] && say "kept the original's files in $GX_DIR/original/:$moved"
fi

# --- 2. files and config ------------------------------------------------------------------
chmod 755 "$DIR/install.sh" "$DIR/uninstall.sh" "$DIR/restart.sh"
if [ ! -e "$DIR/config.json" ]; then
    cp "$DIR/config.sample.json" "$DIR/config.json"
    chmod 600 "$DIR/config.json"
    say "created $GX_DIR/config.json from config.sample.json: set uart.port (the charger's serial port) and the rest there or on the status page"
fi
port_known=yes
port=$(python3 -c 'import json, sys
try:
    port = json.load(open(sys.argv[1])).get("uart", {}).get("port", "")
    print(port if isinstance(port, str) else "")
except Exception as err:
    print("install: WARNING: %s: %s" % (sys.argv[1], err), file=sys.stderr)
    sys.exit(3)' "$DIR/config.json") || port_known=no

# --- 3. the service -----------------------------------------------------------------------
mkdir -p "$SVC_DIR/log" "$LOG_DIR"
# written to a temp file and renamed: supervise may start run at any moment
cat > "$SVC_DIR/run.tmp" <<EOF
#!/bin/sh
# The $NAME service (daemontools), written by $GX_DIR/install.sh.
exec 2>&1
ROOT="\${ROOT:-}"
DIR=\$ROOT$GX_DIR
# a local serial port: take it away from serial-starter's driver first (it would write to the
# charger too and show it twice); by-id names are resolved to the ttyX serial-starter knows
port=\$(python3 -c 'import json, sys
try:
    print(json.load(open(sys.argv[1]))["uart"]["port"])
except Exception:
    pass' "\$DIR/config.json" 2>/dev/null)
case "\$port" in
    /dev/tty*|/dev/serial/by-id/*)
        tty=\$(readlink -f "\$ROOT\$port" 2>/dev/null)
        case "\$port" in /dev/tty*) [ -n "\$tty" ] || tty=\$port ;; esac
        tty=\${tty##*/}
        stop=\$ROOT/opt/victronenergy/serial-starter/stop-tty.sh
        if [ -n "\$tty" ] && [ -x "\$stop" ]; then
            echo "run: keeping serial-starter off \$tty (stop-tty.sh)"
            "\$stop" "\$tty"
        fi
        ;;
esac
exec python3 -u "\$DIR/service.py" --config "\$DIR/config.json"
EOF
chmod 755 "$SVC_DIR/run.tmp"
mv -f "$SVC_DIR/run.tmp" "$SVC_DIR/run"
cat > "$SVC_DIR/log/run.tmp" <<EOF
#!/bin/sh
exec multilog t s25000 n4 /var/log/$NAME
EOF
chmod 755 "$SVC_DIR/log/run.tmp"
mv -f "$SVC_DIR/log/run.tmp" "$SVC_DIR/log/run"
say "service directory $GX_DIR/service (run, log/run; logs in /data/log/$NAME)"

if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$GX_DIR/service" ]; then
    say "link /service/$NAME is in place"
else
    if [ -L "$LINK" ]; then
        svc -d "$LINK" >/dev/null 2>&1
        rm -f "$LINK"
        say "replaced a link /service/$NAME that pointed elsewhere"
    fi
    [ -e "$LINK" ] && fail "/service/$NAME exists and is not a link: remove it first"
    [ -d "$ROOT/service" ] || fail "/service does not exist: is this Venus OS?"
    ln -s "$GX_DIR/service" "$LINK"
    say "linked /service/$NAME -> $GX_DIR/service (svscan starts it within 5 s)"
fi

# --- 4. at every boot ---------------------------------------------------------------------
if [ ! -e "$RC" ]; then
    printf '#!/bin/sh\n' > "$RC"
    chmod 755 "$RC"
    say "created /data/rc.local"
fi
if [ ! -x "$RC" ]; then
    chmod 755 "$RC"
    say "made /data/rc.local executable (Venus runs it only then)"
fi
if [ -n "$(find "$RC" \( -perm -0020 -o -perm -0002 \) 2>/dev/null)" ]; then
    chmod go-w "$RC"
    say "made /data/rc.local writable by root only (a boot script others could change)"
fi
if grep -qxF "$RC_LINE" "$RC"; then
    say "/data/rc.local already re-installs at boot"
else
    # an rc.local that ends with "exit ..." would never reach a line after it: ours goes
    # before that exit (and an earlier version's line without --boot goes)
    awk -v line="$RC_LINE" -v old="sh $GX_DIR/install.sh" '
        $0 == old { next }
        { lines[++n] = $0 }
        END {
            last = n
            while (last > 0 && lines[last] ~ /^[ \t]*$/) last--
            at = (last > 0 && lines[last] ~ /^[ \t]*exit([ \t]|$)/) ? last : n + 1
            for (i = 1; i <= n; i++) { if (i == at) print line; print lines[i] }
            if (at == n + 1) print line
        }' "$RC" > "$RC.$NAME.tmp" && cat "$RC.$NAME.tmp" > "$RC" && rm -f "$RC.$NAME.tmp"
    say "added \"$RC_LINE\" to /data/rc.local (re-installs at every boot)"
fi

# --- 5. keep serial-starter off our USB serial adapter -----------------------------------
make_writable() {
    # the rootfs is read-only on a GX: remount-rw.sh (it also keeps it rw, until the next
    # firmware update): only when someone runs install.sh, never from rc.local at boot
    if [ ! -w "$RULES_DIR" ] && [ -x "$REMOUNT_RW" ]; then
        if [ "$BOOT" = yes ]; then
            say "the root filesystem is read-only: the udev rule waits for install.sh run by" \
                "hand (the service's run script stops serial-starter on the port meanwhile)"
            return 1
        fi
        "$REMOUNT_RW"
        say "made the root filesystem writable (remount-rw.sh)"
    fi
}
drop_rule() {
    if [ -e "$RULES" ]; then
        make_writable || return 0
        rm -f "$RULES"
        udevadm control --reload-rules
        say "removed $1 udev rule /etc/udev/rules.d/${RULES##*/}"
    fi
}
prop() { printf '%s\n' "$props" | sed -n "s/^$1=//p" | head -n 1; }
[ "$port_known" = yes ] || port="(unknown)"
case "$port" in
    "(unknown)")
        say "WARNING: config.json cannot be read: the udev rule is left as it is"
        ;;
    /dev/tty*|/dev/serial/by-id/*)
        if props=$(udevadm info --query=property --name="$port" 2>/dev/null) && [ -n "$props" ]; then
            bus=$(prop ID_BUS)
            vendor=$(prop ID_VENDOR_ID)
            model=$(prop ID_MODEL_ID)
            serial=$(prop ID_SERIAL_SHORT)
            idpath=$(prop ID_PATH)
            devname=$(prop DEVNAME)
            tty=${devname##*/}
            case "$vendor$model" in *[!0-9a-fA-F]*) vendor="" ;; esac
            case "$serial" in *[!A-Za-z0-9._-]*)
                say "the adapter's serial number \"$serial\" is left out of the rule (characters a rule cannot hold)"
                serial="" ;;
            esac
            if [ "$bus" = usb ] && [ ${#vendor} = 4 ] && [ ${#model} = 4 ]; then
                rule="ACTION==\"add\", ENV{ID_BUS}==\"usb\", ENV{ID_VENDOR_ID}==\"$vendor\", ENV{ID_MODEL_ID}==\"$model\""
                case "$idpath" in *[!A-Za-z0-9._:-]*) idpath="" ;; esac
                if [ -n "$serial" ]; then
                    rule="$rule, ENV{ID_SERIAL_SHORT}==\"$serial\""
                elif [ -n "$idpath" ]; then
                    # a CH340 has no serial number: the socket it is plugged into, never
                    # every adapter of its kind (a BMS's RS485 adapter is often one too)
                    rule="$rule, ENV{ID_PATH}==\"$idpath\""
                    say "the adapter has no serial number: the rule keeps serial-starter off the USB socket it is in ($idpath); keep it in that socket"
                else
                    rule=""
                    say "WARNING: the adapter has no serial number and no USB path: no udev rule (it would catch every $vendor:$model adapter); the service's run script stops serial-starter on it at every start"
                fi
                [ -n "$rule" ] && rule="$rule, ENV{VE_SERVICE}=\"ignore\""
                text="# $NAME: serial-starter (Venus's VE.Direct driver) keeps off the charger's adapter ($port).
# Written by $GX_DIR/install.sh (again at boot, from /data/rc.local); removed by uninstall.sh.
$rule"
                if [ -z "$rule" ]; then
                    drop_rule "the stale"
                elif [ -f "$RULES" ] && [ "$(cat "$RULES")" = "$text" ]; then
                    say "udev rule /etc/udev/rules.d/${RULES##*/} is in place"
                elif make_writable; then
                    if ! { printf '%s\n' "$text" > "$RULES.tmp" && mv -f "$RULES.tmp" "$RULES"; }; then
                        fail "cannot write /etc/udev/rules.d/${RULES##*/}"
                    fi
                    # the rule matches "add" events: re-announce our tty as added, so that
                    # udev marks it now and serial-starter lets go of it (a plain trigger
                    # sends "change", which the rule does not match)
                    if [ -n "$tty" ]; then
                        udevadm control --reload-rules && udevadm trigger --action=add --subsystem-match=tty --sysname-match="$tty"
                    else
                        udevadm control --reload-rules && udevadm trigger --action=add --subsystem-match=tty
                    fi
                    say "udev rule /etc/udev/rules.d/${RULES##*/}: serial-starter keeps off $port (usb $vendor:$model${serial:+ serial $serial})"
                fi
            else
                drop_rule "the stale"
                say "$port is not a USB serial adapter: no udev rule; the service's run script stops serial-starter on it at every start"
            fi
        elif [ -f "$RULES" ]; then
            say "$port is not there (adapter unplugged?): kept the udev rule /etc/udev/rules.d/${RULES##*/}"
        else
            say "WARNING: $port is not there (adapter unplugged?): no udev rule yet; plug it in and run install.sh again"
        fi
        ;;
    "")
        drop_rule "the stale"
        say "uart.port is not set in config.json: set it to the charger's port, then run install.sh again"
        ;;
    *)
        drop_rule "the stale"
        say "uart.port $port is not a local serial port: no udev rule needed"
        ;;
esac

# --- 6. (re)start -------------------------------------------------------------------------
case "$(svstat "$LINK" 2>&1)" in
    *": up "*)
        svc -t "$LINK"
        say "restarted the running service (svc -t)"
        ;;
    *": down "*)
        svc -u "$LINK"
        say "started the service (svc -u)"
        ;;
esac
say "done. Status: svstat /service/$NAME; log: tail -F /data/log/$NAME/current | tai64nlocal"
