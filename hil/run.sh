#!/usr/bin/env bash
# hil/run.sh — the hardware-in-the-loop rig (docs/hil.md).
#
# Boots Debian's own kernel under QEMU (TCG) with this computer's root filesystem shared read-only,
# so that smpctl meets what a container cannot give it: a real USB CDC-ACM serial device
# (/dev/ttyACM0 from dummy_hcd + a configfs ACM gadget), the project's udev rule applied by a real
# systemd-udevd, a real hot-unplug and a real GPIO character device (gpio-sim). The emulated
# firmware (`smpctl sim --port /dev/ttyGS0`) answers on the gadget side; hil/scenarios.sh runs the
# scenarios inside and the VM's exit status becomes this script's.
#
# Usage: hil/run.sh [--smpctl PATH] [--selftest-broken-rule] [--keep-going] [--only NAMES]
#   --smpctl PATH            the smpctl binary to test (default: `swift build` with $SCRATCH, or
#                            .build, then its --show-bin-path)
#   --selftest-broken-rule   check the rig itself: boot with a copy of the udev rule whose vendor
#                            id is wrong; succeed only if the rig fails and says why
#   --keep-going             run every scenario even after one failed (the default stops at the
#                            first failed step of a scenario, but always runs the later scenarios)
#   --only NAMES             run only these scenarios (comma-separated, for iterating; the setup
#                            always runs): devices, session, permission, unplug, gpio (the chip and
#                            its edges; the gpio-* ones imply it), gpio-estop, gpio-remove;
#                            powercut (only when named: 20 power cuts of the records' disk)
# Environment:
#   SMP_HIL_DEVICE=/dev/…    no VM: run the scenarios against a real applicator at that path
#   SMP_HIL_TIMEOUT=SECONDS  wall limit for the VM (default 900)
#   SMP_HIL_CACHE=DIR        where the kernel, packages and builds are kept (default hil/cache)
#   SMP_HIL_RULES=FILE       the udev rule to install in the VM (default udev/70-smp-applicator.rules)
#   HIL_POWERCUT_POINTS=N    cut points of the powercut scenario (default 20)
#
# Needs apt (Debian 12): installs its packages through scripts/install-deps.sh (root or sudo).
# The kernel, linux-source and the built gpio-sim module are cached under hil/cache/ (git-ignored).
# Exit status: the scenarios' (0 all passed, 1 a scenario failed), 2 the rig could not run.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

HIL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HIL_DIR/.." && pwd)
CACHE=${SMP_HIL_CACHE:-$HIL_DIR/cache}
RULES=${SMP_HIL_RULES:-$REPO/udev/70-smp-applicator.rules}
TIMEOUT=${SMP_HIL_TIMEOUT:-900}
SMPCTL=""
SELFTEST_BROKEN_RULE=0
KEEP_GOING=0
ONLY=""

while (($#)); do
    case "$1" in
        --smpctl) SMPCTL=$2; shift 2 ;;
        --smpctl=*) SMPCTL=${1#*=}; shift ;;
        --selftest-broken-rule) SELFTEST_BROKEN_RULE=1; shift ;;
        --keep-going) KEEP_GOING=1; shift ;;
        --only) ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        *) echo "hil: unknown argument: $1 (see hil/run.sh --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'hil: %s\n' "$*" >&2; }
die() { printf 'hil: ERROR: %s\n' "$*" >&2; exit 2; }
now() { date +%s.%N; }
T_START=$(now)
elapsed() { awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

sudo_cmd=()
if ((EUID != 0)); then sudo_cmd=(sudo); fi

# --- the smpctl binary ----------------------------------------------------------------------------
find_smpctl() {
    if [[ -n "$SMPCTL" ]]; then
        [[ -x "$SMPCTL" ]] || die "--smpctl $SMPCTL is not an executable file"
        SMPCTL=$(cd "$(dirname "$SMPCTL")" && pwd)/$(basename "$SMPCTL")
        return
    fi
    local scratch=${SCRATCH:-.build}
    say "building smpctl (swift build --scratch-path $scratch)"
    (cd "$REPO" && swift build --scratch-path "$scratch" --product smpctl >&2) || die "swift build failed"
    SMPCTL=$(cd "$REPO" && swift build --scratch-path "$scratch" --show-bin-path)/smpctl
    [[ -x "$SMPCTL" ]] || die "no smpctl binary at $SMPCTL"
}

# --- against a real applicator: no VM -------------------------------------------------------------
if [[ -n "${SMP_HIL_DEVICE:-}" ]]; then
    ((SELFTEST_BROKEN_RULE == 0)) || die "--selftest-broken-rule needs the VM; unset SMP_HIL_DEVICE"
    "$REPO/scripts/install-deps.sh" python3 gpiod
    find_smpctl
    say "SMP_HIL_DEVICE=$SMP_HIL_DEVICE: running the scenarios against the real applicator (no VM)"
    exec env HIL_MODE=device HIL_DEVICE="$SMP_HIL_DEVICE" HIL_SMPCTL="$SMPCTL" HIL_REPO="$REPO" \
        HIL_KEEP_GOING="$KEEP_GOING" HIL_ONLY="$ONLY" bash "$HIL_DIR/scenarios.sh"
fi

# --- packages -------------------------------------------------------------------------------------
"$REPO/scripts/install-deps.sh" qemu-system-x86 busybox-static cpio kmod udev gpiod \
    build-essential python3 util-linux xz-utils dmsetup e2fsprogs

# The kernel: whatever linux-image-amd64 depends on today (e.g. linux-image-6.1.0-56-amd64).
resolve_kernel() {
    apt-cache depends --no-recommends --no-suggests linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(resolve_kernel)
if [[ -z "$KPKG" ]]; then
    say "apt knows no linux-image-amd64 yet: apt-get update"
    "${sudo_cmd[@]}" apt-get update -qq
    KPKG=$(resolve_kernel)
fi
[[ -n "$KPKG" ]] || die "cannot resolve the linux-image-amd64 dependency with apt-cache"
KVER=${KPKG#linux-image-}                      # 6.1.0-56-amd64
KDEBVER=$(apt-cache policy "$KPKG" | awk '/Candidate:/ { print $2 }')   # 6.1.192-2
KSERIES=$(echo "$KVER" | cut -d. -f1,2)        # 6.1
say "kernel $KPKG $KDEBVER (linux-source-$KSERIES)"

# Headers are installed (kbuild needs them in place); image and source are only downloaded.
"$REPO/scripts/install-deps.sh" "linux-headers-$KVER"

mkdir -p "$CACHE/debs"
apt_sandbox=()   # as root, download as root: _apt cannot write into the cache
if ((EUID == 0)); then apt_sandbox=(-o APT::Sandbox::User=root); fi
fetch_deb() {  # fetch_deb PACKAGE VERSION → path of the .deb in the cache
    local package=$1 version=$2 deb
    deb=$(ls "$CACHE/debs/${package}_${version//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
    if [[ -z "$deb" ]]; then
        say "apt-get download $package=$version"
        (cd "$CACHE/debs" && apt-get download -q "${apt_sandbox[@]}" "$package=$version" >&2) \
            || die "apt-get download $package=$version failed"
        deb=$(ls "$CACHE/debs/${package}_${version//:/%3a}_"*.deb | head -n1)
    fi
    echo "$deb"
}

KDIR=$CACHE/kernel-$KVER
if [[ ! -f "$KDIR/.complete" ]]; then
    deb=$(fetch_deb "$KPKG" "$KDEBVER")
    rm -rf "$KDIR" && mkdir -p "$KDIR"
    dpkg-deb -x "$deb" "$KDIR"
    depmod -b "$KDIR" "$KVER"
    touch "$KDIR/.complete"
fi
VMLINUZ=$KDIR/boot/vmlinuz-$KVER
[[ -f "$VMLINUZ" ]] || die "no $VMLINUZ in $KPKG"

# gpio-sim: Debian's kernel has neither gpio-sim nor CONFIG_IRQ_SIM. Build both from
# linux-source into one out-of-tree module. irq_to_desc() is not exported to modules, so the one
# call handle_simple_irq(irq_to_desc(irqnum)) in irq_sim.c becomes generic_handle_irq(irqnum).
SRCDIR=$CACHE/linux-source-$KDEBVER
if [[ ! -f "$SRCDIR/.complete" ]]; then
    deb=$(fetch_deb "linux-source-$KSERIES" "$KDEBVER")
    rm -rf "$SRCDIR" && mkdir -p "$SRCDIR"
    say "extracting gpio-sim.c, gpiolib.h, irq_sim.c from linux-source-$KSERIES"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/linux-source-$KSERIES.tar.xz" \
        | tar -xJ -C "$SRCDIR" --strip-components=1 \
            "linux-source-$KSERIES/drivers/gpio/gpio-sim.c" \
            "linux-source-$KSERIES/drivers/gpio/gpiolib.h" \
            "linux-source-$KSERIES/kernel/irq/irq_sim.c"
    touch "$SRCDIR/.complete"
    rm -f "$deb"  # 140 MB, and only these three files are needed
fi

GPIODIR=$CACHE/gpio-sim-$KVER
GPIO_KO=$GPIODIR/gpio_sim_hil.ko
if [[ ! -f "$GPIO_KO" ]]; then
    rm -rf "$GPIODIR" && mkdir -p "$GPIODIR"
    cp "$SRCDIR/drivers/gpio/gpio-sim.c" "$SRCDIR/drivers/gpio/gpiolib.h" "$SRCDIR/kernel/irq/irq_sim.c" "$GPIODIR/"
    grep -q 'handle_simple_irq(irq_to_desc(irqnum))' "$GPIODIR/irq_sim.c" \
        || die "irq_sim.c from linux-source-$KSERIES no longer has handle_simple_irq(irq_to_desc(irqnum)): update hil/run.sh"
    sed -i 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' "$GPIODIR/irq_sim.c"
    printf 'obj-m := gpio_sim_hil.o\ngpio_sim_hil-y := gpio-sim.o irq_sim.o\n' > "$GPIODIR/Kbuild"
    say "building gpio-sim for $KVER"
    make -s -C "/usr/src/linux-headers-$KVER" M="$GPIODIR" modules > "$GPIODIR/build.log" 2>&1 \
        || { cat "$GPIODIR/build.log" >&2; die "building the gpio-sim module failed"; }
fi

find_smpctl

# --- initramfs --------------------------------------------------------------------------------------
# busybox, the modules for virtio 9p, configfs, dummy_hcd + cdc-acm + the ACM gadget, in the order
# modprobe would load them, and an init that mounts the host root and chroots into the scenarios.
RUN=$CACHE/run
rm -rf "$RUN" && mkdir -p "$RUN/share"
INITRD_DIR=$RUN/initramfs
mkdir -p "$INITRD_DIR"/{bin,dev,proc,sys,host,modules}
cp /bin/busybox "$INITRD_DIR/bin/busybox"
# loop, dm-mod and ext4: the power-cut scenario's disk (hil/scenarios.sh, scenario_powercut).
MODULES=(virtio_pci 9pnet_virtio 9p configfs dummy_hcd cdc-acm usb_f_acm libcomposite loop dm-mod ext4)
: > "$INITRD_DIR/modules/order"
for module in "${MODULES[@]}"; do
    modprobe -d "$KDIR" -S "$KVER" --show-depends "$module" 2>/dev/null | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r path; do
    name=$(basename "$path")
    case "$name" in
        *.ko.xz) xz -dc "$path" > "$INITRD_DIR/modules/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -qdc "$path" > "$INITRD_DIR/modules/${name%.zst}"; name=${name%.zst} ;;
        *.ko.gz) gzip -dc "$path" > "$INITRD_DIR/modules/${name%.gz}"; name=${name%.gz} ;;
        *) cp "$path" "$INITRD_DIR/modules/$name" ;;
    esac
    echo "$name" >> "$INITRD_DIR/modules/order"
done
[[ -s "$INITRD_DIR/modules/order" ]] || die "modprobe found none of the modules in $KDIR"

[[ -f "$RULES" ]] || die "no udev rule at $RULES (SMP_HIL_RULES)"
RULES=$(cd "$(dirname "$RULES")" && pwd)/$(basename "$RULES")
if ((SELFTEST_BROKEN_RULE)); then
    # A copy of the rule with a wrong vendor id (1209 → 1208): the rig must notice.
    grep -q 'ATTRS{idVendor}=="1209"' "$RULES" || die "$RULES has no ATTRS{idVendor}==\"1209\" to break"
    sed 's/ATTRS{idVendor}=="1209"/ATTRS{idVendor}=="1208"/g' "$RULES" > "$RUN/share/70-smp-applicator.rules"
    RULES=$RUN/share/70-smp-applicator.rules
    say "selftest: booting with a broken copy of the udev rule (vendor 1208 instead of 1209)"
fi

# The binary's folder needs a share of its own only when it is outside the repository.
BIN_SHARE=""
bin_share_args=()
case "$(dirname "$SMPCTL")/" in
    "$REPO"/*) ;;
    *) BIN_SHARE=$(dirname "$SMPCTL")
       bin_share_args=(-virtfs "local,path=$BIN_SHARE,mount_tag=smpbin,security_model=none,readonly=on,multidevs=remap") ;;
esac

cat > "$INITRD_DIR/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in \$(cat /modules/order); do
    insmod /modules/\$module || echo "hil-init: insmod \$module failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host \\
    || { echo "hil-init: cannot mount the host root"; poweroff -f; }
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts 2>/dev/null; mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs -o mode=0755 tmpfs /host/run
mount -t configfs configfs /host/sys/kernel/config
# The repository (and the smpctl binary's folder) are shared on their own: a clone under /tmp or
# /run would otherwise be hidden by the tmpfs just mounted there. Same path inside as outside.
mkdir -p '/host$REPO' 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose repo '/host$REPO' \\
    || { echo "hil-init: cannot mount the repository share"; poweroff -f; }
if [ -n '$BIN_SHARE' ]; then
    mkdir -p '/host$BIN_SHARE' 2>/dev/null
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose smpbin '/host$BIN_SHARE' \\
        || { echo "hil-init: cannot mount the smpctl binary's folder"; poweroff -f; }
fi
mkdir -p /host/run/hil
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 hil /host/run/hil \\
    || { echo "hil-init: cannot mount the result share"; poweroff -f; }
echo "hil-init: chroot into the host root, running hil/scenarios.sh"
chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    HOME=/root LANG=C.UTF-8 HIL_MODE=vm HIL_SHARE=/run/hil HIL_REPO='$REPO' HIL_SMPCTL='$SMPCTL' \\
    HIL_GPIO_KO='$GPIO_KO' HIL_RULES='$RULES' HIL_KEEP_GOING='$KEEP_GOING' HIL_ONLY='$ONLY' \\
    HIL_SELFTEST_BROKEN_RULE='$SELFTEST_BROKEN_RULE' HIL_POWERCUT_POINTS='${HIL_POWERCUT_POINTS:-20}' \\
    /bin/bash '$HIL_DIR/scenarios.sh' > /host/run/hil/scenarios.log 2>&1
echo \$? > /host/run/hil/status
sync
echo "hil-init: scenarios ended with status \$(cat /host/run/hil/status)"
umount /host/run/hil
poweroff -f
EOF
chmod +x "$INITRD_DIR/init"
(cd "$INITRD_DIR" && find . | cpio -o -H newc --quiet | gzip -1) > "$RUN/initrd.gz"


# --- boot ---------------------------------------------------------------------------------------------
# TCG, not KVM: on these machines KVM aborted (-cpu host) or hung; TCG boots in seconds.
say "booting $KVER under QEMU (TCG, 2 CPUs, 1 GiB); prepared in $(elapsed) s"
T_BOOT=$(now)
# Emulated time runs on the host's clock: a guest that waits for a CPU misses the applicator's
# lease. As root, give the VM priority over other work on the machine (a parallel build).
priority=()
if ((EUID == 0)); then priority=(nice -n -10); fi
set +e
timeout --foreground -k 10 "$TIMEOUT" "${priority[@]}" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
    -display none -monitor none -serial "file:$RUN/console.log" -no-reboot \
    -kernel "$VMLINUZ" -initrd "$RUN/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on,multidevs=remap" \
    "${bin_share_args[@]}" \
    -virtfs "local,path=$RUN/share,mount_tag=hil,security_model=none"
qemu_status=$?
set -e
VM_SECONDS=$(awk -v a="$T_BOOT" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
# Emulation is slow, and slower still on a busy host: the guest then misses the applicator's lease
# (250 ms) and sessions hold. Say so when the host was busy, as the likely cause of a failure.
LOAD=$(cut -d' ' -f1 /proc/loadavg)
CPUS=$(nproc)
BUSY_NOTE=""
if awk -v l="$LOAD" -v c="$CPUS" 'BEGIN { exit !(l > c) }'; then
    BUSY_NOTE="the host was busy while the VM ran (load average $LOAD on $CPUS CPUs): under TCG emulation a starved guest misses the applicator's lease and sessions hold (exit 75, 'lease expired'); run the rig on an otherwise idle machine"
fi

if ((qemu_status == 124)); then
    say "the VM did not finish within ${TIMEOUT} s (SMP_HIL_TIMEOUT); console:"
    tail -n 40 "$RUN/console.log" >&2 || true
    status=2
elif [[ ! -f "$RUN/share/status" ]]; then
    say "the VM ended (qemu status $qemu_status) without a result; console:"
    tail -n 60 "$RUN/console.log" >&2 || true
    status=2
else
    status=$(cat "$RUN/share/status")
fi

if ((SELFTEST_BROKEN_RULE)); then
    # The rig must fail, and say it is the rule.
    if ((status != 0)) && grep -q 'udev rule' "$RUN/share/scenarios.log" 2>/dev/null; then
        say "selftest: with a broken rule (wrong vendor id) the rig failed as it should:"
        sed -n '/FAIL: the udev rule/,/^==== summary/p' "$RUN/share/scenarios.log" \
            | grep -E 'FAIL|ID_VENDOR_ID|ID_MODEL_ID|ID_SERIAL_SHORT|idVendor' | sed 's/^/    /' >&2
        say "selftest passed (VM $VM_SECONDS s, total $(elapsed) s)"
        exit 0
    fi
    say "selftest FAILED: with a broken udev rule the rig did not report the failure (status $status); log:"
    cat "$RUN/share/scenarios.log" >&2 2>/dev/null || true
    exit 1
fi

if ((status != 0)); then
    say "scenarios FAILED (status $status); the log from the VM ($RUN/share/scenarios.log):"
    cat "$RUN/share/scenarios.log" >&2 2>/dev/null || true
    say "kernel console: $RUN/console.log"
    [[ -z $BUSY_NOTE ]] || say "note: $BUSY_NOTE"
    exit "$((status == 2 ? 2 : 1))"
fi
# Passed: the summary and figures only (the full log stays in the cache).
sed -n '/^==== summary/,$p' "$RUN/share/scenarios.log"
[[ -z $BUSY_NOTE ]] || say "note: $BUSY_NOTE (the figures above are inflated)"
say "passed (VM $VM_SECONDS s, total $(elapsed) s); full log: $RUN/share/scenarios.log"
