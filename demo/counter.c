/*
 * The demo's workload: a process with state worth looking at.
 *
 * It draws a random token at start and keeps it in memory, then increments
 * a counter five times a second, printing both and writing the counter to
 * /tmp/counter. After a restore, the token proves that the process is the
 * same one, and the counter shows where it was when it was checkpointed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static char token[17];
static volatile unsigned long counter;

static void make_token(void)
{
	unsigned char bytes[8] = {0};
	int fd = open("/dev/urandom", O_RDONLY);

	if (fd >= 0) {
		if (read(fd, bytes, sizeof(bytes)) != sizeof(bytes))
			bytes[0] = (unsigned char)getpid();
		close(fd);
	}
	for (int i = 0; i < 8; i++)
		snprintf(token + 2 * i, 3, "%02x", bytes[i]);
}

static void save_counter(unsigned long value)
{
	FILE *file = fopen("/tmp/counter", "w");

	if (file) {
		fprintf(file, "%lu\n", value);
		fclose(file);
	}
}

static void tick(void)
{
	struct timespec pause = { .tv_sec = 0, .tv_nsec = 200 * 1000 * 1000 };

	counter++;
	printf("token=%s counter=%lu\n", token, counter);
	fflush(stdout);
	save_counter(counter);
	nanosleep(&pause, NULL);
}

int main(void)
{
	make_token();
	for (;;)
		tick();
}
