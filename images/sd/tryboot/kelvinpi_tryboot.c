// SPDX-License-Identifier: GPL-2.0
/*
 * kelvinpi_tryboot: hand a "reboot '0 tryboot'" to the Raspberry Pi firmware.
 *
 * RAUC's backend (rauc-tryboot) boots a freshly written slot once by rebooting with the argument
 * "0 tryboot"; the firmware then reads autoboot.txt's [tryboot] section. The firmware only knows
 * about it if the kernel sets its one-shot reboot flag through the mailbox property interface
 * before the restart. Raspberry Pi's own kernel does that in its firmware driver's reboot notifier;
 * Debian's (mainline) kernel does not, so without this module every update is "rolled back".
 *
 * This does what the downstream notifier does for the flag: on a restart whose command contains
 * " tryboot", set RPI_FIRMWARE_SET_REBOOT_FLAGS to 1. The firmware driver itself (built into
 * Debian's kernel) sends RPI_FIRMWARE_NOTIFY_REBOOT afterwards, from its shutdown hook.
 *
 * Without the firmware node (qemu, any other machine) the notifier still runs and says that it
 * would have set the flag: the update test's harness, which plays the firmware there, takes that
 * line as the request.
 */
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/of.h>
#include <linux/reboot.h>
#include <linux/string.h>
#include <soc/bcm2835/raspberrypi-firmware.h>

/* downstream's tag (raspberrypi/linux); mainline's enum rpi_firmware_property_tag does not have it */
#define KELVINPI_SET_REBOOT_FLAGS 0x00038064
#define KELVINPI_REBOOT_FLAG_TRYBOOT 0x1

static struct device_node *fw_node;

static int kelvinpi_tryboot_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	const char *cmd = data;
	struct rpi_firmware *fw;
	u32 flags = KELVINPI_REBOOT_FLAG_TRYBOOT;
	int ret;

	/* downstream's test, verbatim: the partition comes first, the flags follow after spaces */
	if (action != SYS_RESTART || !cmd || !strstr(cmd, " tryboot"))
		return NOTIFY_DONE;
	if (!fw_node) {
		pr_emerg("kelvinpi_tryboot: tryboot requested; no firmware here\n");
		return NOTIFY_DONE;
	}
	/* taken now, not at load: the firmware driver may probe late (its mailbox defers it) */
	fw = rpi_firmware_get(fw_node);
	if (!fw) {
		pr_emerg("kelvinpi_tryboot: firmware not ready: tryboot flag NOT set\n");
		return NOTIFY_DONE;
	}
	ret = rpi_firmware_property(fw, KELVINPI_SET_REBOOT_FLAGS, &flags, sizeof(flags));
	rpi_firmware_put(fw);
	if (ret)
		pr_emerg("kelvinpi_tryboot: firmware refused (%d): tryboot flag NOT set\n", ret);
	else
		pr_emerg("kelvinpi_tryboot: firmware tryboot flag set\n");
	return NOTIFY_DONE;
}

/*
 * Priority 0, as downstream registers its own. Reboot notifiers all run in kernel_restart_prepare(),
 * before device_shutdown() (where the firmware driver sends NOTIFY_REBOOT) and before
 * machine_restart() calls the restart handlers (bcm2835_wdt's resets the SoC): the mailbox is
 * still up here.
 */
static struct notifier_block kelvinpi_tryboot_nb = {
	.notifier_call = kelvinpi_tryboot_notify,
	.priority = 0,
};

static int __init kelvinpi_tryboot_init(void)
{
	int ret;

	fw_node = of_find_compatible_node(NULL, NULL, "raspberrypi,bcm2835-firmware");
	if (fw_node)
		pr_info("kelvinpi_tryboot: Raspberry Pi firmware at %pOF: a tryboot restart sets its flag\n",
			fw_node);
	else
		pr_info("kelvinpi_tryboot: no Raspberry Pi firmware: inactive (a tryboot restart is only logged)\n");
	ret = register_reboot_notifier(&kelvinpi_tryboot_nb);
	if (ret) {
		pr_err("kelvinpi_tryboot: cannot register the reboot notifier (%d)\n", ret);
		of_node_put(fw_node);
		fw_node = NULL;
	}
	return ret;
}

static void __exit kelvinpi_tryboot_exit(void)
{
	unregister_reboot_notifier(&kelvinpi_tryboot_nb);
	of_node_put(fw_node);
}

module_init(kelvinpi_tryboot_init);
module_exit(kelvinpi_tryboot_exit);

MODULE_DESCRIPTION("Kelvinpi: pass a 'tryboot' restart to the Raspberry Pi firmware's reboot flags");
MODULE_LICENSE("GPL");
