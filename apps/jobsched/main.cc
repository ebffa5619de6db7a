#include "cli/cli.h"

int main(int argc, char** argv) { return jobsched::cli::Main(argc, argv); }
