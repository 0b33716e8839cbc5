#!/bin/sh
# Remove what install.sh added: the service (stopped first), its /service link, the line in
# /data/rc.local, the udev rule that keeps serial-starter off the adapter, the service
# directory. config.json, state.json and the logs stay unless --purge. The package's own files
# stay in /data/etc/bluesmart-charger (remove the directory to finish).
#
#   sh /data/etc/bluesmart-charger/uninstall.sh [--purge]
#
# ROOT (empty on the GX) prefixes every path: the tests work in a throwaway root.

ROOT="${ROOT:-}"
NAME=bluesmart-charger
GX_DIR=/data/etc/$NAME
DIR=$ROOT$GX_DIR
SVC_DIR=$DIR/service
LINK=$ROOT/service/$NAME
RC=$ROOT/data/rc.local
RC_LINE="sh $GX_DIR/install.sh --boot"
OLD_RC_LINE="sh $GX_DIR/install.sh" # an earlier version's
LOG_DIR=$ROOT/data/log/$NAME
RULES_DIR=$ROOT/etc/udev/rules.d
RULES=$RULES_DIR/zz-$NAME.rules
REMOUNT_RW=$ROOT/opt/victronenergy/swupdate-scripts/remount-rw.sh

say() { echo "uninstall: $*"; }

purge=no
case "${1:-}" in
    "") ;;
    --purge) purge=yes ;;
    *) echo "usage: sh $GX_DIR/uninstall.sh [--purge]" >&2; exit 2 ;;
esac

# the service: down, unlinked, its supervise processes ended (svscan does not end them)
if [ -L "$LINK" ] || [ -e "$LINK" ]; then
    svc -d "$LINK"
    svc -d "$LINK/log"
    rm -f "$LINK"
    say "stopped the service and removed /service/$NAME"
fi
if [ -d "$SVC_DIR" ]; then
    svc -x "$SVC_DIR" "$SVC_DIR/log" >/dev/null 2>&1
    [ -e "$SVC_DIR/supervise" ] && sleep 1
    pkill -f "^supervise $NAME(/log)?\$" >/dev/null 2>&1
fi

# the line in /data/rc.local; the file too if install made it and nothing else is left in it
if [ -f "$RC" ] && grep -qxF -e "$RC_LINE" -e "$OLD_RC_LINE" "$RC"; then
    grep -vxF -e "$RC_LINE" -e "$OLD_RC_LINE" "$RC" > "$RC.$NAME.tmp"
    cat "$RC.$NAME.tmp" > "$RC" # in place: the file keeps its mode
    rm -f "$RC.$NAME.tmp"
    say "removed \"$RC_LINE\" from /data/rc.local"
    if ! grep -v '^#!/bin/sh$' "$RC" | grep -q -v '^[[:space:]]*$'; then
        rm -f "$RC"
        say "removed /data/rc.local (nothing else was in it)"
    fi
fi

# the udev rule
if [ -e "$RULES" ]; then
    if [ ! -w "$RULES_DIR" ] && [ -x "$REMOUNT_RW" ]; then
        "$REMOUNT_RW"
        say "made the root filesystem writable (remount-rw.sh)"
    fi
    rm -f "$RULES"
    udevadm control --reload-rules
    say "removed the udev rule /etc/udev/rules.d/${RULES##*/} (serial-starter takes the adapter again after replugging it or a reboot)"
fi

if [ -d "$SVC_DIR" ]; then
    rm -rf "$SVC_DIR"
    say "removed $GX_DIR/service"
fi

# Python's caches of the package's modules (written when the service ran)
if [ -d "$DIR" ]; then
    find "$DIR" -depth -type d -name __pycache__ -exec rm -rf {} \;
fi

if [ "$purge" = yes ]; then
    rm -f "$DIR/config.json" "$DIR/config.json.tmp" "$DIR/state.json" "$DIR/state.json.tmp" \
        "$DIR/gx-switch.json" "$DIR/gx-switch.json.tmp"
    rm -rf "$LOG_DIR"
    say "purged config.json, state.json, gx-switch.json and the logs (/data/log/$NAME)"
else
    say "kept $GX_DIR/config.json and the logs in /data/log/$NAME (--purge removes them)"
fi
say "done. The package's files are still in $GX_DIR: rm -rf $GX_DIR removes them"
