/*
 * Benchmark workload for scripts/bench.sh.
 *
 * Usage: workload SIZE_MIB CHANGE_PCT STATUS_FILE
 *
 * The program maps SIZE_MIB MiB of anonymous memory and writes every page:
 * the first half with pseudo-random bytes (incompressible) and the second
 * half with text that zstd compresses well. Each text page differs from the
 * others, so deduplication cannot fold them together.
 *
 * Its main loop sleeps 1 ms at a time and records the maximum gap between
 * two wake-ups, which is how long the process saw itself stopped (a CRIU
 * freeze shows up as one long gap). Two signals drive it:
 *
 *   SIGUSR1  write the maximum gap seen since the previous report to
 *            STATUS_FILE, then reset it;
 *   SIGUSR2  rewrite CHANGE_PCT percent of the pages (picked at random, each
 *            rewritten in the style of its half), then reset the maximum gap
 *            so that the rewrite itself is not counted as a freeze.
 *
 * STATUS_FILE is replaced atomically (write and rename) with one line:
 *   reports=N rewrites=M max_gap_us=G
 * N and M count the handled signals, so the caller can wait for its request.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096

static volatile sig_atomic_t report_requested;
static volatile sig_atomic_t rewrite_requested;

static void on_signal(int signo)
{
	if (signo == SIGUSR1)
		report_requested = 1;
	else if (signo == SIGUSR2)
		rewrite_requested = 1;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* xorshift64: fast and good enough to defeat compression. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random_page(unsigned char *page)
{
	uint64_t *words = (uint64_t *)page;

	for (size_t i = 0; i < PAGE_SIZE / sizeof(uint64_t); i++)
		words[i] = next_random();
}

/* Lines of text that name the page and the generation that wrote it. */
static void fill_text_page(unsigned char *page, size_t index, unsigned long generation)
{
	char line[64];
	size_t offset = 0;

	while (offset < PAGE_SIZE) {
		int length = snprintf(line, sizeof(line),
				      "page %010zu generation %08lu compressible text\n",
				      index, generation);
		size_t n = (size_t)length;

		if (n > PAGE_SIZE - offset)
			n = PAGE_SIZE - offset;
		memcpy(page + offset, line, n);
		offset += n;
	}
}

static void write_page(unsigned char *memory, size_t pages, size_t index, unsigned long generation)
{
	unsigned char *page = memory + index * PAGE_SIZE;

	if (index < pages / 2)
		fill_random_page(page);
	else
		fill_text_page(page, index, generation);
}

static int write_status(const char *path, unsigned long reports, unsigned long rewrites,
			uint64_t max_gap_us)
{
	char temporary[4096];
	FILE *file;

	if (snprintf(temporary, sizeof(temporary), "%s.tmp", path) >= (int)sizeof(temporary))
		return -1;
	file = fopen(temporary, "w");
	if (!file)
		return -1;
	fprintf(file, "reports=%lu rewrites=%lu max_gap_us=%llu\n", reports, rewrites,
		(unsigned long long)max_gap_us);
	if (fclose(file) != 0)
		return -1;
	return rename(temporary, path);
}

int main(int argc, char **argv)
{
	struct sigaction action;
	struct timespec tick = { 0, 1000000 };
	unsigned long size_mib, change_pct, reports = 0, rewrites = 0;
	size_t pages, changed;
	unsigned char *memory;
	uint64_t previous, max_gap_us = 0;
	char *end;

	if (argc != 4) {
		fprintf(stderr, "usage: workload SIZE_MIB CHANGE_PCT STATUS_FILE\n");
		return 2;
	}
	size_mib = strtoul(argv[1], &end, 10);
	if (*end || size_mib == 0) {
		fprintf(stderr, "workload: invalid size %s (expected MiB > 0)\n", argv[1]);
		return 2;
	}
	change_pct = strtoul(argv[2], &end, 10);
	if (*end || change_pct > 100) {
		fprintf(stderr, "workload: invalid change share %s (expected 0-100)\n", argv[2]);
		return 2;
	}

	pages = size_mib * 1024 * 1024 / PAGE_SIZE;
	changed = pages * change_pct / 100;
	memory = mmap(NULL, pages * PAGE_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memory == MAP_FAILED) {
		perror("workload: mmap");
		return 1;
	}
	rng_state ^= (uint64_t)getpid() << 32 ^ now_us();
	for (size_t i = 0; i < pages; i++)
		write_page(memory, pages, i, 0);

	memset(&action, 0, sizeof(action));
	action.sa_handler = on_signal;
	sigemptyset(&action.sa_mask);
	if (sigaction(SIGUSR1, &action, NULL) != 0 || sigaction(SIGUSR2, &action, NULL) != 0) {
		perror("workload: sigaction");
		return 1;
	}
	if (write_status(argv[3], reports, rewrites, 0) != 0) {
		perror("workload: write status");
		return 1;
	}
	printf("workload ready: %lu MiB, %zu pages, %zu rewritten per request\n", size_mib,
	       pages, changed);
	fflush(stdout);

	previous = now_us();
	for (;;) {
		uint64_t now;

		/* An interrupted sleep is fine: the next wake-up measures the gap. */
		if (nanosleep(&tick, NULL) != 0 && errno != EINTR) {
			perror("workload: nanosleep");
			return 1;
		}
		now = now_us();
		if (now - previous > max_gap_us)
			max_gap_us = now - previous;
		previous = now;

		if (rewrite_requested) {
			rewrite_requested = 0;
			rewrites++;
			for (size_t i = 0; i < changed; i++)
				write_page(memory, pages, next_random() % pages, rewrites);
			max_gap_us = 0;
			previous = now_us();
			write_status(argv[3], reports, rewrites, 0);
		}
		if (report_requested) {
			report_requested = 0;
			reports++;
			write_status(argv[3], reports, rewrites, max_gap_us);
			max_gap_us = 0;
			previous = now_us();
		}
	}
}
