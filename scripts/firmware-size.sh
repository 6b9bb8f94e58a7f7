#!/usr/bin/env bash
# Prints the firmware image's section sizes and checks the flash and static-RAM budget
# (docs/firmware.md): .text (code + read-only data + .ARM.exidx + the .data image it copies) must
# fit TEXT_BUDGET; .data + .bss + the reserved stack must leave room for the heap within
# RAM_BUDGET. The heap's high-water mark is measured at run time (hil/firmware-qemu.sh).
# Usage: scripts/firmware-size.sh ELF TEXT_BUDGET RAM_BUDGET
set -euo pipefail
elf=$1 text_budget=$2 ram_budget=$3
size=arm-none-eabi-size
nm=arm-none-eabi-nm
$size -A "$elf" | grep -E '^(section|\.text|\.ARM\.exidx|\.data|\.bss) '
section() { $size -A "$elf" | awk -v name="$1" '$1 == name { print $2 }'; }
text=$(section .text) exidx=$(section .ARM.exidx) data=$(section .data) bss=$(section .bss)
top=$((16#$($nm "$elf" | awk '$3 == "__stack_top" { print $1 }')))
limit=$((16#$($nm "$elf" | awk '$3 == "__stack_limit" { print $1 }')))
stack=$((top - limit))
flash=$((text + exidx + data))
static=$((data + bss))
kb() { awk -v b="$1" 'BEGIN { printf "%.1f KB", b / 1024 }'; }
echo "firmware: flash $flash bytes ($(kb $flash); .text $text + .ARM.exidx $exidx + .data image $data), budget $(kb "$text_budget")"
echo "firmware: static RAM $static bytes (.data $data + .bss $bss), stack reserved $stack bytes;" \
     "RAM budget $(kb "$ram_budget"): $((ram_budget - static)) bytes left for stack + heap"
status=0
if ((flash > text_budget)); then
    echo "firmware: FLASH OVER BUDGET: $flash > $text_budget bytes" >&2; status=1
fi
if ((static >= ram_budget)); then
    echo "firmware: STATIC RAM OVER BUDGET: $static >= $ram_budget bytes" >&2; status=1
fi
exit $status
