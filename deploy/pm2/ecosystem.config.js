// PM2 process file for intake, for teams that run their services under PM2 instead of systemd.
//
//   install -m 0755 target/release/intake /usr/local/bin/intake
//   install -d -m 0750 /etc/intake /var/lib/intake /var/log/intake
//   cp deploy/intake.example.toml /etc/intake/intake.toml      # then edit it
//   cp deploy/pm2/ecosystem.config.js /etc/intake/             # secrets in /etc/intake/intake.env
//   /usr/local/bin/intake --config /etc/intake/intake.toml migrate
//   pm2 start /etc/intake/ecosystem.config.js && pm2 save
//
// Changes:
//   pm2 restart intake                     after editing intake.toml (read at start)
//   pm2 restart intake --update-env        with variables exported in your shell, e.g.
//                                          INTAKE_LOG__LEVEL=debug pm2 restart intake --update-env
//   pm2 restart /etc/intake/ecosystem.config.js --update-env
//                                          after editing intake.env (this file reads it again)
//
// Secrets stay out of this file: they are read from /etc/intake/intake.env (KEY=value lines, as
// the systemd unit's EnvironmentFile), or the file INTAKE_ENV_FILE names. Note that `pm2 save`
// writes the environment, secrets included, to ~/.pm2/dump.pm2: keep that directory private.
//
// intake logs to stderr: PM2 writes it to /var/log/intake/intake.log, the file the [intake-pm2]
// jail in deploy/fail2ban/jail.d/intake.conf reads. Rotate it with pm2-logrotate.
//
// One process per instance: intake runs its own worker threads, so PM2's cluster mode is not
// used. For several instances, add apps with their own INTAKE_SERVER__LISTEN port (see
// docs/deployment.md, "Several instances").

const fs = require("fs");

// The file as systemd's EnvironmentFile reads it: KEY=value lines, `#` or `;` comments, and a
// value in single or double quotes stands without them.
function environmentFile(path) {
  const env = {};
  if (!fs.existsSync(path)) {
    return env;
  }
  for (const line of fs.readFileSync(path, "utf8").split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#") || trimmed.startsWith(";")) {
      continue;
    }
    const eq = trimmed.indexOf("=");
    if (eq > 0) {
      let value = trimmed.slice(eq + 1).trim();
      if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) {
        value = value.slice(1, -1);
      }
      env[trimmed.slice(0, eq).trim()] = value;
    }
  }
  return env;
}

module.exports = {
  apps: [
    {
      name: "intake",
      script: "/usr/local/bin/intake",
      args: "serve",
      interpreter: "none",
      exec_mode: "fork",
      instances: 1,
      cwd: "/var/lib/intake",
      env: {
        INTAKE_CONFIG: "/etc/intake/intake.toml",
        ...environmentFile(process.env.INTAKE_ENV_FILE || "/etc/intake/intake.env"),
      },
      // SIGTERM, then up to 90 s to finish requests and deliveries in flight before SIGKILL.
      kill_signal: "SIGTERM",
      kill_timeout: 90000,
      autorestart: true,
      // A crash loop backs off (100 ms, doubling, up to 15 s) instead of spinning.
      exp_backoff_restart_delay: 100,
      max_memory_restart: "512M",
      out_file: "/var/log/intake/intake.out.log",
      error_file: "/var/log/intake/intake.log",
      merge_logs: true,
      time: false,
    },
  ],
};
