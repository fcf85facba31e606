/*
 * The demo's workload: a process with state worth looking at.
 *
 * It draws a random token at start and keeps it in memory, then increments
 * a counter five times a second, printing both and writing the counter to
 * /tmp/counter. After a restore, the token proves that the process is the
 * same one, and the counter shows where it was when it was checkpointed.
 *
 * SIGUSR1 makes it handle a "request" that it has no data for. The handler
 * dereferences a NULL pointer, so the process dies of SIGSEGV, as a real
 * bug would make it.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static char token[17];
static volatile unsigned long counter;
static volatile sig_atomic_t request_pending;

struct request {
	unsigned long id;
};

static void on_request(int signal)
{
	(void)signal;
	request_pending = 1;
}

/* The bug: a request that arrives without data is dereferenced anyway. */
static void handle_request(const struct request *request)
{
	printf("handling request %lu\n", request->id);
}

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

	if (request_pending)
		handle_request(NULL);
	counter++;
	printf("token=%s counter=%lu\n", token, counter);
	fflush(stdout);
	save_counter(counter);
	nanosleep(&pause, NULL);
}

int main(void)
{
	make_token();
	signal(SIGUSR1, on_request);
	for (;;)
		tick();
}
