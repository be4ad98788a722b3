#!/usr/bin/env bash
# make-guest.sh builds the guest kvmm's tests and benchmarks boot (`make guest`):
#
#   build/guest/vmlinuz            Debian's cloud kernel, a bzImage (64-bit boot protocol)
#   build/guest/vmlinux            the same kernel as an ELF, for the PVH entry
#   build/guest/initramfs.cpio.gz  busybox-static, /init (scripts/guest-init.sh), virtio modules
#   build/guest/guest.env          KVMM_GUEST_* facts about the above, shell syntax
#
# Nothing is installed on the host for the guest: the .debs are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` under build/guest/. Host
# tools it needs: apt-get, dpkg-deb, cpio, gzip, readelf (binutils) and the
# decompressor of the kernel payload (xz-utils, zstd, ...). Missing tools are
# installed with apt-get when running as root; otherwise the script stops and
# names the Debian package to install.
#
# Idempotent: downloads and unpacked packages are kept and reused (remove
# build/guest/debs to move to a newer kernel); outputs are only rebuilt when
# an input is newer. Environment overrides:
#   KVMM_GUEST_DIR       output directory (default <repo>/build/guest)
#   KVMM_KERNEL_PKG      kernel package (default: what linux-image-cloud-amd64 depends on)
#   KVMM_GUEST_MODULES   space-separated modules to put in the initramfs
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${KVMM_GUEST_DIR:-$root/build/guest}
debs=$out/debs
pkgs=$out/pkg
init_script=$root/scripts/guest-init.sh

# Modules the test guest loads when they exist as modules in this kernel
# (builtins need nothing; modules for absent hardware fail harmlessly).
modules=${KVMM_GUEST_MODULES:-"virtio_pci virtio_mmio virtio_blk virtio_net virtio_balloon virtio_rng virtio_console virtio_scsi vmw_vsock_virtio_transport vmw_balloon vmw_vmci button"}

log() { printf 'make-guest: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

apt_updated=0
apt_update_once() {
	if [[ $apt_updated == 0 && $EUID == 0 ]]; then
		log "apt-get update"
		apt-get update -qq >&2
		apt_updated=1
	fi
}

# need TOOL PACKAGE: make sure TOOL is on PATH, installing PACKAGE as root.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	if [[ $EUID != 0 ]]; then
		die "$1 not found: install the Debian package $2 (apt-get install $2)"
	fi
	log "installing $2 (for $1)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2; then
		apt_update_once
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2
	fi
	command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# le32 FILE OFFSET prints the little-endian u32 at OFFSET.
le32() {
	local b
	read -r -a b < <(od -An -v -tu1 -j "$2" -N4 "$1")
	[[ ${#b[@]} == 4 ]] || die "$1: truncated at offset $2"
	echo $((b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24))
}

u8() {
	local b
	b=$(od -An -v -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	[[ -n $b ]] || die "$1: truncated at offset $2"
	echo "$b"
}

hexbytes() { od -An -v -tx1 -j "$2" -N"$3" "$1" | tr -d ' \n'; }

for t in apt-get:apt apt-cache:apt dpkg-deb:dpkg od:coreutils gzip:gzip awk:mawk; do
	need "${t%%:*}" "${t#*:}"
done
need cpio cpio
need readelf binutils

mkdir -p "$debs" "$pkgs"

# --- Resolve and download the packages ------------------------------------

resolve_kernel_pkg() {
	local p
	# The metapackage is what a Debian cloud image runs; it depends on exactly
	# one versioned image package.
	p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9].*-cloud-amd64$/ { print $2 }' | sort -V | tail -n1)
	if [[ -z $p ]]; then
		p=$(apt-cache search --names-only '^linux-image-[0-9].*-cloud-amd64$' 2>/dev/null |
			awk '{ print $1 }' | grep -v -- '-dbg$' | sort -V | tail -n1)
	fi
	echo "$p"
}

# download PKG: fetch PKG's .deb into $debs unless one is already there.
download() {
	local pkg=$1
	if compgen -G "$debs/${pkg}_*.deb" >/dev/null; then
		return 0
	fi
	log "apt-get download $pkg"
	local opts=()
	# As root apt drops to the _apt user, which cannot write into build/;
	# downloading as root is what the sandbox warning would do anyway.
	[[ $EUID == 0 ]] && opts=(-o APT::Sandbox::User=root)
	if ! (cd "$debs" && apt-get download -q "${opts[@]}" "$pkg" >&2); then
		apt_update_once
		(cd "$debs" && apt-get download -q "${opts[@]}" "$pkg" >&2) || die "apt-get download $pkg failed"
	fi
}

# unpack PKG: dpkg-deb -x its .deb into $pkgs/PKG once.
unpack() {
	local pkg=$1 deb
	deb=$(compgen -G "$debs/${pkg}_*.deb" | sort -V | tail -n1)
	[[ -n $deb ]] || die "no .deb for $pkg in $debs"
	if [[ -f $pkgs/$pkg/.unpacked && $pkgs/$pkg/.unpacked -nt $deb ]]; then
		return 0
	fi
	log "unpacking $(basename "$deb")"
	rm -rf "${pkgs:?}/${pkg:?}"
	mkdir -p "$pkgs/$pkg"
	dpkg-deb -x "$deb" "$pkgs/$pkg"
	touch "$pkgs/$pkg/.unpacked"
}

kpkg=${KVMM_KERNEL_PKG:-}
if [[ -z $kpkg ]]; then
	# Reuse what an earlier run downloaded before asking apt again.
	kpkg=$(compgen -G "$debs/linux-image-*-cloud-amd64_*.deb" | xargs -r -n1 basename | sed 's/_.*//' | sort -V | tail -n1 || true)
fi
if [[ -z $kpkg ]]; then
	kpkg=$(resolve_kernel_pkg)
	if [[ -z $kpkg ]]; then
		apt_update_once
		kpkg=$(resolve_kernel_pkg)
	fi
	[[ -n $kpkg ]] || die "cannot resolve linux-image-cloud-amd64 to a kernel package (run apt-get update)"
fi

download "$kpkg"
download busybox-static
unpack "$kpkg"
unpack busybox-static

kroot=$pkgs/$kpkg
bbroot=$pkgs/busybox-static
busybox=$bbroot/bin/busybox
[[ -x $busybox ]] || die "busybox-static has no bin/busybox"

vmlinuz_src=$(compgen -G "$kroot/boot/vmlinuz-*" | head -n1 || true)
[[ -n $vmlinuz_src ]] || die "$kpkg has no /boot/vmlinuz-*"
kver=${vmlinuz_src##*/vmlinuz-}
moddir=""
for d in "$kroot/lib/modules/$kver" "$kroot/usr/lib/modules/$kver"; do
	[[ -d $d ]] && moddir=$d
done
[[ -n $moddir ]] || die "$kpkg has no modules directory for $kver"

# --- bzImage ----------------------------------------------------------------

if ! cmp -s "$vmlinuz_src" "$out/vmlinuz"; then
	cp "$vmlinuz_src" "$out/vmlinuz.tmp"
	mv "$out/vmlinuz.tmp" "$out/vmlinuz"
	log "vmlinuz: $kver"
fi

# --- vmlinux (ELF) from the bzImage payload -----------------------------------
#
# boot.rst: the protected-mode part starts after the setup sectors,
# (setup_sects + 1) * 512 bytes into the file (setup_sects 0 means 4), and
# payload_offset (0x248) / payload_length (0x24c) locate the compressed
# vmlinux inside it. Except for gzip, the kernel build appends the
# uncompressed size as a little-endian u32 (size_append), which the
# decompressors would reject as trailing garbage; gzip's own trailer ends with
# that size (ISIZE). Either way the last four payload bytes hold it.

extract_vmlinux() {
	local img=$1 dst=$2
	[[ $(hexbytes "$img" $((0x202)) 4) == 48647253 ]] || die "$img: no HdrS signature, not a bzImage"
	local sects poff plen start magic isize
	sects=$(u8 "$img" $((0x1f1)))
	((sects == 0)) && sects=4
	poff=$(le32 "$img" $((0x248)))
	plen=$(le32 "$img" $((0x24c)))
	start=$(((sects + 1) * 512 + poff))
	local fsize
	fsize=$(stat -c %s "$img")
	((plen > 4 && start + plen <= fsize)) || die "$img: payload [$start, +$plen) outside the file ($fsize bytes)"
	isize=$(le32 "$img" $((start + plen - 4)))
	magic=$(hexbytes "$img" "$start" 6)
	local cmd strip=4
	case $magic in
	1f8b*) cmd=(gzip -dc) strip=0 && need gzip gzip ;;
	fd377a585a00) cmd=(xz -dc) && need xz xz-utils ;;
	28b52ffd*) cmd=(zstd -dcq) && need zstd zstd ;;
	5d0000*) cmd=(xz -dc --format=lzma) && need xz xz-utils ;;
	425a68*) cmd=(bzip2 -dc) && need bzip2 bzip2 ;;
	02214c18*) cmd=(lz4 -dc) && need lz4 lz4 ;;
	894c5a4f*) cmd=(lzop -dc) && need lzop lzop ;;
	*) die "$img: unknown payload compression (magic $magic)" ;;
	esac
	log "vmlinux: ${cmd[0]} payload of $plen bytes at $start"
	dd if="$img" bs=64K iflag=skip_bytes,count_bytes skip="$start" count=$((plen - strip)) status=none |
		"${cmd[@]}" >"$dst.tmp"
	local got
	got=$(stat -c %s "$dst.tmp")
	# The size is mod 2^32 for gzip; vmlinux is far below 4 GiB.
	((got == isize)) || die "$img: decompressed $got bytes, payload says $isize"
	[[ $(hexbytes "$dst.tmp" 0 4) == 7f454c46 ]] || die "$img: payload is not an ELF file"
	mv "$dst.tmp" "$dst"
}

if [[ ! -f $out/vmlinux || $out/vmlinuz -nt $out/vmlinux ]]; then
	extract_vmlinux "$out/vmlinuz" "$out/vmlinux"
fi

# XEN_ELFNOTE_PHYS32_ENTRY is note type 18 (0x12) owned by "Xen"; readelf
# names it only in recent binutils, so accept both spellings.
pvh_note=no
if readelf -n "$out/vmlinux" | grep -Eq '^[[:space:]]*Xen[[:space:]].*(0x00000012|PHYS32_ENTRY)'; then
	pvh_note=yes
else
	die "$out/vmlinux has no Xen PHYS32_ENTRY note: this kernel cannot boot through PVH (needs CONFIG_PVH=y)"
fi

# --- initramfs ----------------------------------------------------------------

# Map a module name to its modules.dep line (names compare with - and _ equal).
dep_line() {
	awk -v want="$(echo "$1" | tr - _)" '{
		p = $1; sub(/:$/, "", p); b = p; sub(/.*\//, "", b)
		sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b)
		if (b == want) { print; exit }
	}' "$moddir/modules.dep"
}

is_builtin() {
	[[ -f $moddir/modules.builtin ]] || return 1
	awk -v want="$(echo "$1" | tr - _)" '{
		b = $1; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub(/-/, "_", b)
		if (b == want) { found = 1; exit }
	} END { exit !found }' "$moddir/modules.builtin"
}

# Debian's package ships modules.order and modules.builtin but leaves
# modules.dep to depmod in its postinst, so generate it in the unpacked tree
# (kmod's depmod when the host has it, else busybox's, which runs anywhere).
if [[ ! -s $moddir/modules.dep ]]; then
	depmod_base=${moddir%/lib/modules/"$kver"}
	log "depmod $kver"
	if command -v depmod >/dev/null 2>&1; then
		depmod -b "$depmod_base" "$kver"
	else
		"$busybox" depmod -b "$depmod_base" "$kver"
	fi
	[[ -s $moddir/modules.dep ]] || die "depmod wrote no modules.dep in $moddir"
fi

# Load order: a depth-first walk over modules.dep, each module after all of
# its dependencies, so the order does not depend on how depmod sorted a line.
declare -A picked=()
order=()
builtin=()
missing=()
visit() {
	local path=$1 line d
	[[ -n ${picked[$path]:-} ]] && return 0
	picked[$path]=1
	line=$(awk -v key="$path:" '$1 == key { print; exit }' "$moddir/modules.dep")
	for d in ${line#*:}; do
		visit "$d"
	done
	order+=("$path")
}
for m in $modules; do
	line=$(dep_line "$m")
	if [[ -z $line ]]; then
		if is_builtin "$m"; then builtin+=("$m"); else missing+=("$m"); fi
		continue
	fi
	visit "${line%%:*}"
done

initrd=$out/initramfs.cpio.gz
rebuild=0
if [[ ! -f $initrd ]]; then
	rebuild=1
else
	for f in "$init_script" "$0" "$busybox" "$moddir/modules.dep"; do
		[[ $f -nt $initrd ]] && rebuild=1
	done
	# A different module list is a different initramfs.
	[[ $(cat "$out/.initramfs-modules" 2>/dev/null || true) == "$modules" ]] || rebuild=1
fi

if ((rebuild)); then
	stage=$out/initramfs.stage
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc}
	cp "$busybox" "$stage/bin/busybox"
	# Applet links made at build time (busybox-static runs on the host):
	# --list-full prints each applet's install path.
	while read -r applet; do
		[[ $applet == bin/busybox || -e $stage/$applet ]] && continue
		mkdir -p "$stage/$(dirname "$applet")"
		ln -s /bin/busybox "$stage/$applet"
	done < <("$busybox" --list-full)
	install -m 0755 "$init_script" "$stage/init"
	# The kernel's built-in initramfs already provides /dev/console; ours
	# repeats it where mknod is allowed, for kernels built without one.
	if ! { mknod -m 600 "$stage/dev/console" c 5 1 && mknod -m 666 "$stage/dev/null" c 1 3; } 2>/dev/null; then
		log "cannot mknod here: relying on the kernel's built-in /dev/console"
	fi

	smod=$stage/lib/modules/$kver
	mkdir -p "$smod"
	: >"$smod/load-order"
	declare -A kopath=()
	for p in "${order[@]}"; do
		src=$moddir/$p
		ko=${p%.xz}
		ko=${ko%.zst}
		ko=${ko%.gz}
		mkdir -p "$smod/$(dirname "$ko")"
		# busybox insmod wants plain ELF objects; Debian ships .ko.xz.
		case $p in
		*.ko.xz) need xz xz-utils && xz -dc "$src" >"$smod/$ko" ;;
		*.ko.zst) need zstd zstd && zstd -dcq "$src" >"$smod/$ko" ;;
		*.ko.gz) gzip -dc "$src" >"$smod/$ko" ;;
		*) cp "$src" "$smod/$ko" ;;
		esac
		kopath[$p]=$ko
		echo "$ko" >>"$smod/load-order"
	done
	# modules.dep restricted to the copied modules, with the new names, so
	# busybox modprobe works in the guest too.
	for p in "${order[@]}"; do
		line=$(awk -v key="$p:" '$1 == key { print; exit }' "$moddir/modules.dep")
		deps=""
		for d in ${line#*:}; do
			deps="$deps ${kopath[$d]:-$d}"
		done
		echo "${kopath[$p]}:$deps"
	done >"$smod/modules.dep"
	for f in modules.alias modules.builtin modules.softdep modules.order; do
		[[ -f $moddir/$f ]] && sed -E 's/\.ko\.(xz|zst|gz)\b/.ko/g' "$moddir/$f" >"$smod/$f"
	done

	# newc is the only cpio format the kernel unpacks. Fixed mtimes, sorted
	# names and --reproducible make the archive depend on the inputs alone.
	find "$stage" -exec touch -h -d @0 {} +
	(cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
		cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
		gzip -9n >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	echo "$modules" >"$out/.initramfs-modules"
	rm -rf "$stage"
	log "initramfs: ${#order[@]} module files"
fi

# --- Report ---------------------------------------------------------------------

size() { stat -c %s "$1"; }
cat >"$out/guest.env.tmp" <<EOF
KVMM_GUEST_KERNEL_PACKAGE=$kpkg
KVMM_GUEST_KERNEL_VERSION=$kver
KVMM_GUEST_VMLINUZ=$out/vmlinuz
KVMM_GUEST_VMLINUX=$out/vmlinux
KVMM_GUEST_INITRAMFS=$initrd
KVMM_GUEST_PVH_NOTE=$pvh_note
KVMM_GUEST_MODULES_BUILTIN="${builtin[*]}"
KVMM_GUEST_MODULES_MISSING="${missing[*]}"
EOF
mv "$out/guest.env.tmp" "$out/guest.env"

log "kernel $kver ($kpkg)"
log "  vmlinuz          $(size "$out/vmlinuz") bytes"
log "  vmlinux          $(size "$out/vmlinux") bytes, PVH note: $pvh_note"
log "  initramfs.cpio.gz $(size "$initrd") bytes"
log "  modules built in: ${builtin[*]:-none}; not in this kernel: ${missing[*]:-none}"
