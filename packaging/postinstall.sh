#!/bin/sh
# Creates the farthing system user, its state directory and lets it
# read its configuration.
set -e
if ! getent passwd farthing >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/farthing --no-create-home \
    --shell /usr/sbin/nologin --comment "Farthing gateway" farthing
fi
install -d -m 0700 -o farthing -g farthing /var/lib/farthing
chown root:farthing /etc/farthing /etc/farthing/farthingd.yaml
chmod 0750 /etc/farthing
chmod 0640 /etc/farthing/farthingd.yaml
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  if [ "$1" = "configure" ] && [ -n "$2" ]; then
    # An upgrade: restart a running gateway on the new binary.
    systemctl try-restart farthingd.service >/dev/null || true
  fi
fi
exit 0
