# What scripts/bench and scripts/instructions do to the site through its real forms, with curl.

# Registers $3 with password $4 on the server at 127.0.0.1:$1 (cookie jar $2); prints the
# Cookie header a browser would then send (the one-shot flash cookie left out, as a browser
# would have consumed it).
register() {
    local port=$1 jar=$2 email=$3 password=$4 token
    token=$(curl -sf -c "$jar" "http://127.0.0.1:$port/register" | grep -o 'name="csrf_token" value="[^"]*"' | head -1 | cut -d'"' -f4)
    curl -sf -b "$jar" -c "$jar" -o /dev/null -H "Origin: http://127.0.0.1:$port" \
        --data-urlencode "email=$email" --data-urlencode "password=$password" \
        --data-urlencode "password_confirm=$password" --data-urlencode "csrf_token=$token" \
        "http://127.0.0.1:$port/register"
    cookie_header "$jar"
}

# Logs $3 in with password $4 on the server at 127.0.0.1:$1 (cookie jar $2, which keeps the
# browser's CSRF cookie); prints the Cookie header a browser would then send, as `register`.
login() {
    local port=$1 jar=$2 email=$3 password=$4 token
    token=$(curl -sf -b "$jar" -c "$jar" "http://127.0.0.1:$port/login" | grep -o 'name="csrf_token" value="[^"]*"' | head -1 | cut -d'"' -f4)
    curl -sf -b "$jar" -c "$jar" -o /dev/null -H "Origin: http://127.0.0.1:$port" \
        --data-urlencode "email=$email" --data-urlencode "password=$password" \
        --data-urlencode "csrf_token=$token" "http://127.0.0.1:$port/login"
    cookie_header "$jar"
}

# The Cookie header of curl's jar $1, less the one-shot flash cookie. HttpOnly cookies are the
# lines curl prefixes with "#HttpOnly_".
cookie_header() {
    awk 'NF >= 7 && (!/^#/ || /^#HttpOnly_/) && $6 != "latchkey_flash" {printf "%s%s=%s", sep, $6, $7; sep="; "}' "$1"
}
