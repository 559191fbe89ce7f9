//! The simulated fleet's catalogue: the models, OS versions, applications, profiles, extension
//! attribute definitions and groups computers are generated from (data, not behaviour).

pub(super) const MODELS: &[(&str, &str)] = &[
    ("MacBook Pro (14-inch, 2023)", "Mac14,9"),
    ("MacBook Air (M2, 2022)", "Mac14,2"),
    ("iMac (24-inch, 2021)", "iMac21,1"),
    ("Mac mini (2023)", "Mac14,3"),
    ("Mac Studio (2023)", "Mac14,13"),
];

pub(super) const OS: &[(&str, &str)] = &[
    ("14.7.1", "23H222"),
    ("15.1.1", "24B91"),
    ("15.2", "24C101"),
];

pub(super) const APPS: &[(&str, &str)] = &[
    ("Safari.app", "com.apple.Safari"),
    ("Google Chrome.app", "com.google.Chrome"),
    ("Slack.app", "com.tinyspeck.slackmacgap"),
    ("Microsoft Word.app", "com.microsoft.Word"),
    ("Microsoft Excel.app", "com.microsoft.Excel"),
    ("Microsoft PowerPoint.app", "com.microsoft.Powerpoint"),
    ("Microsoft Outlook.app", "com.microsoft.Outlook"),
    ("Microsoft Teams.app", "com.microsoft.teams2"),
    ("OneDrive.app", "com.microsoft.OneDrive"),
    ("zoom.us.app", "us.zoom.xos"),
    ("Self Service.app", "com.jamfsoftware.selfservice.mac"),
    ("Firefox.app", "org.mozilla.firefox"),
    ("Visual Studio Code.app", "com.microsoft.VSCode"),
    ("iTerm.app", "com.googlecode.iterm2"),
    ("Docker.app", "com.docker.docker"),
    ("1Password.app", "com.1password.1password"),
    ("Adobe Acrobat Reader.app", "com.adobe.Reader"),
    ("Adobe Photoshop.app", "com.adobe.Photoshop"),
    ("Figma.app", "com.figma.Desktop"),
    ("Notion.app", "notion.id"),
    ("Spotify.app", "com.spotify.client"),
    ("VLC.app", "org.videolan.vlc"),
    ("Keynote.app", "com.apple.iWork.Keynote"),
    ("Pages.app", "com.apple.iWork.Pages"),
    ("Numbers.app", "com.apple.iWork.Numbers"),
    ("Xcode.app", "com.apple.dt.Xcode"),
    ("GarageBand.app", "com.apple.garageband10"),
    ("iMovie.app", "com.apple.iMovieApp"),
    ("Microsoft Edge.app", "com.microsoft.edgemac"),
    ("Brave Browser.app", "com.brave.Browser"),
    ("Cisco Webex Meetings.app", "com.webex.meetingmanager"),
    (
        "GlobalProtect.app",
        "com.paloaltonetworks.GlobalProtect.client",
    ),
    ("CrowdStrike Falcon.app", "com.crowdstrike.falcon.App"),
    ("Jamf Connect.app", "com.jamf.connect"),
    ("Jamf Protect.app", "com.jamf.protect.agent"),
    ("Okta Verify.app", "com.okta.mobile"),
    ("Postman.app", "com.postmanlabs.mac"),
    ("Sublime Text.app", "com.sublimetext.4"),
    ("IntelliJ IDEA.app", "com.jetbrains.intellij"),
    ("PyCharm.app", "com.jetbrains.pycharm"),
    ("Tableau Desktop.app", "com.tableausoftware.tableaudesktop"),
    ("Miro.app", "com.electron.realtimeboard"),
    ("Dropbox.app", "com.getdropbox.dropbox"),
    ("Box Drive.app", "com.box.desktop"),
    ("Google Drive.app", "com.google.drivefs"),
    ("Rectangle.app", "com.knollsoft.Rectangle"),
    ("The Unarchiver.app", "com.macpaw.site.theunarchiver"),
    ("Grammarly Desktop.app", "com.grammarly.ProjectLlama"),
    ("Loom.app", "com.loom.desktop"),
    ("Discord.app", "com.hnc.Discord"),
    ("WhatsApp.app", "net.whatsapp.WhatsApp"),
    ("Signal.app", "org.whispersystems.signal-desktop"),
    ("Telegram.app", "ru.keepcoder.Telegram"),
    ("Obsidian.app", "md.obsidian"),
    ("Raycast.app", "com.raycast.macos"),
    ("Alfred 5.app", "com.runningwithcrayons.Alfred"),
    ("Bartender 5.app", "com.surteesstudios.Bartender"),
    ("Homebrew Updater.app", ""),
    ("Company Portal.app", "com.microsoft.CompanyPortalMac"),
    ("Zscaler.app", "com.zscaler.zscaler"),
];

/// Configuration profiles a Mac may have: `(display name, identifier)`.
pub(super) const PROFILES: &[(&str, &str)] = &[
    ("Wi-Fi Corporate", "com.example.wifi"),
    ("FileVault Escrow", "com.example.filevault"),
    ("Privacy Preferences (PPPC)", "com.example.pppc"),
    ("Software Update Policy", "com.example.softwareupdate"),
    ("Login Window", "com.example.loginwindow"),
    ("Jamf Connect", "com.jamf.connect.profile"),
];

/// Extension attribute definitions of the simulated server.
pub const EA_DEFS: &[(&str, &str, &str)] = &[
    ("1", "Department Code", "STRING"),
    ("2", "Battery Health", "STRING"),
    ("3", "Uptime Days", "INTEGER"),
    ("4", "Last Backup", "DATE_TIME"),
];

/// Every computer group the simulated Jamf has: `(id, name, smart)`.
pub const COMPUTER_GROUPS: &[(&str, &str, bool)] = &[
    ("1", "All Managed Clients", true),
    ("2", "Engineering Macs", false),
    ("3", "macOS 15", true),
    ("4", "Pilot Ring", false),
];
