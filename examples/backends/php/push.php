<?php
/**
 * Push to connmix from a PHP backend (curl extension, PHP 7.4+).
 *
 *   php push.php user 1001 "Hello"             # {"event":"@user",...} to every connection of user 1001
 *   php push.php publish user:1001 'any text'   # d delivered byte for byte to channel user:1001
 *   php push.php send 4294967297 'just you'     # to one connection (its conn:client_id())
 *
 * Environment: CONNMIX_API (default http://127.0.0.1:6789), CONNMIX_USER and
 * CONNMIX_PASSWORD when access.users is set. In your app, require this file and
 * call connmix_publish() / connmix_send() / connmix_push_to_user().
 */

class ConnmixException extends RuntimeException
{
}

/** POSTs a JSON body to the API and returns the envelope's "r" (an array). */
function connmix_call(string $path, array $body): array
{
    $api = getenv('CONNMIX_API') ?: 'http://127.0.0.1:6789';
    $ch = curl_init(rtrim($api, '/') . $path);
    $opts = [
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE),
        CURLOPT_HTTPHEADER => ['Content-Type: application/json'],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_TIMEOUT => 10,
    ];
    $user = getenv('CONNMIX_USER');
    if ($user !== false && $user !== '') {
        $opts[CURLOPT_HTTPAUTH] = CURLAUTH_BASIC;
        $opts[CURLOPT_USERPWD] = $user . ':' . (getenv('CONNMIX_PASSWORD') ?: '');
    }
    curl_setopt_array($ch, $opts);
    $text = curl_exec($ch);
    if ($text === false) {
        $err = curl_error($ch);
        curl_close($ch);
        throw new ConnmixException("cannot reach $api: $err");
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);
    if ($status !== 200) { // 401/403 access, 413 too large, ...
        throw new ConnmixException(trim($text), $status);
    }
    $envelope = json_decode($text, true);
    if (!empty($envelope['E'])) {
        throw new ConnmixException($envelope['E']['m'], $envelope['E']['c']);
    }
    return $envelope['r'];
}

/** Every subscriber of $channel receives $data as one text frame: ['s' => delivered, 'f' => failed]. */
function connmix_publish(string $channel, string $data): array
{
    return connmix_call('/v1/mesh/publish', ['c' => $channel, 'd' => $data]);
}

/** One connection, on any node, receives $data. */
function connmix_send(string $clientId, string $data): array
{
    return connmix_call('/v1/mesh/send', ['c' => $clientId, 'd' => $data]);
}

/** The message center's event for user $uid (channel user:<uid>). */
function connmix_push_to_user($uid, string $msg): array
{
    $data = json_encode(
        ['event' => '@user', 'data' => ['uid' => ctype_digit((string)$uid) ? (int)$uid : $uid, 'msg' => $msg]],
        JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
    );
    return connmix_publish("user:$uid", $data);
}

if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    [$cmd, $a, $b] = array_pad(array_slice($argv, 1), 3, null);
    try {
        switch ($cmd) {
            case 'user':
                $r = connmix_push_to_user($a, (string)$b);
                break;
            case 'publish':
                $r = connmix_publish((string)$a, (string)$b);
                break;
            case 'send':
                $r = connmix_send((string)$a, (string)$b);
                break;
            default:
                fwrite(STDERR, "usage: php push.php user UID MSG | publish CHANNEL DATA | send CLIENT_ID DATA\n");
                exit(2);
        }
    } catch (ConnmixException $e) {
        fwrite(STDERR, "connmix error {$e->getCode()}: {$e->getMessage()}\n");
        exit(1);
    }
    echo json_encode($r), "\n";
}
