#!/bin/sh
# Restart the bluesmart-charger service (daemontools), e.g. after editing config.json by hand.
#   sh /data/etc/bluesmart-charger/restart.sh
ROOT="${ROOT:-}"
svc -t "$ROOT/service/bluesmart-charger" && echo "restart: sent (svstat /service/bluesmart-charger shows the new uptime)"
