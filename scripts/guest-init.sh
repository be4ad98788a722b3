#!/bin/sh
# /init of the kvmm test initramfs (built by scripts/make-guest.sh).
#
# Output contract, read by the tests and the boot benchmark on the serial
# console:
#   KVMM-INIT-REACHED          first line init prints; the benchmark times it
#   KVMM-INFO ...              nproc, MemTotal and kernel release
#   KVMM-MODULES ...           which listed modules loaded / failed
#   KVMM-CHECK key=value ...   one line per check asked for with kvmm.check=
#   KVMM-CHECK-DONE            all checks ran; the VM powers off right after
#
# kvmm.check=LIST (comma separated) on the kernel command line selects checks:
#   basic    KVMM-CHECK cpus=N mem_kb=M
#   virtio   KVMM-CHECK virtio=<device ids of /sys/bus/virtio/devices>
#   block    KVMM-CHECK block=<name:512-byte sectors ...>
#   net      KVMM-CHECK net=<interfaces>
#   modules  KVMM-CHECK modules=<loaded modules>
# Without kvmm.check the console gets a shell; leaving it powers off.
#
# PID 1 must never exit (the kernel panics), so nothing here uses set -e.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# devtmpfs first: /dev/console must exist before anything is printed. The
# kernel only automounts devtmpfs on a real root fs, never on an initramfs.
mount -t devtmpfs -o mode=0755 devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo KVMM-INIT-REACHED

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /tmp /run
mount -t devpts devpts /dev/pts 2>/dev/null

mem_kb() { awk '/^MemTotal:/ { print $2 }' /proc/meminfo; }

echo "KVMM-INFO nproc=$(nproc) mem_kb=$(mem_kb) kernel=$(uname -r)"

# Modules, in the dependency order make-guest.sh computed from modules.dep
# (one path per line relative to /lib/modules/<release>/). A module whose
# hardware is absent (vmw_balloon outside VMware) fails to load: reported,
# not fatal.
moddir=/lib/modules/$(uname -r)
loaded=""
failed=""
if [ -f "$moddir/load-order" ]; then
	while read -r path; do
		[ -n "$path" ] || continue
		name=${path##*/}
		name=${name%.ko}
		# /sys/module uses underscores whatever the file name uses.
		sysname=$(echo "$name" | tr - _)
		if [ -d "/sys/module/$sysname" ]; then
			continue
		fi
		if insmod "$moddir/$path" 2>/dev/null; then
			loaded="$loaded $name"
		else
			failed="$failed $name"
		fi
	done <"$moddir/load-order"
fi
echo "KVMM-MODULES loaded:${loaded:- none} failed:${failed:- none}"

checks=""
# The command line is one line of space-separated words: split on purpose.
# shellcheck disable=SC2013
for word in $(cat /proc/cmdline); do
	case "$word" in
	kvmm.check=*) checks="$checks $(echo "${word#kvmm.check=}" | tr , ' ')" ;;
	esac
done

run_check() {
	case "$1" in
	basic)
		echo "KVMM-CHECK cpus=$(nproc) mem_kb=$(mem_kb)"
		;;
	virtio)
		ids=""
		for d in /sys/bus/virtio/devices/*; do
			[ -e "$d/device" ] && ids="$ids${ids:+,}$(cat "$d/device")"
		done
		echo "KVMM-CHECK virtio=${ids:-none}"
		;;
	block)
		devs=""
		for d in /sys/block/*; do
			[ -e "$d/size" ] && devs="$devs${devs:+,}${d##*/}:$(cat "$d/size")"
		done
		echo "KVMM-CHECK block=${devs:-none}"
		;;
	net)
		ifs=""
		for d in /sys/class/net/*; do
			[ -e "$d" ] && ifs="$ifs${ifs:+,}${d##*/}"
		done
		echo "KVMM-CHECK net=${ifs:-none}"
		;;
	modules)
		mods=$(awk '{ printf "%s%s", sep, $1; sep = "," }' /proc/modules)
		echo "KVMM-CHECK modules=${mods:-none}"
		;;
	*)
		echo "KVMM-CHECK unknown=$1"
		;;
	esac
}

if [ -n "$checks" ]; then
	for c in $checks; do
		run_check "$c"
	done
	echo KVMM-CHECK-DONE
	sync
	poweroff -f
	# poweroff -f only returns if the machine could not be turned off.
	echo "KVMM-POWEROFF-FAILED"
	while :; do sleep 3600; done
fi

echo "kvmm guest: shell on the console; exit to power off"
# cttyhack opens the real console tty (ttyS0) so the shell gets job control.
setsid cttyhack sh
poweroff -f
while :; do sleep 3600; done
